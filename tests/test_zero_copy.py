"""Zero copy, measured: mmap loads do not grow RSS by the file size; saves do not copy."""

from __future__ import annotations

import json

import numpy as np

import modelpack

from conftest import run_python

SIZE_MIB = 256

MEASURE = r"""
import json, resource, sys, numpy as np
import modelpack
def rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
mode, path = sys.argv[1], sys.argv[2]
base = rss_mib()
if mode == "load":
    tree = modelpack.load(path)
    out = {"after": rss_mib() - base, "n": len(tree)}
    total = sum(float(a[::4096].sum()) for a in tree.values())  # touch a little
    out["sum"] = total
elif mode == "save":
    arrays = {f"t{i}": np.ones((SIZE // 16,), np.float32) for i in range(16)}
    data = rss_mib() - base
    modelpack.save(arrays, path)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {"data": data, "peak_above_base": peak - base}
print(json.dumps(out))
"""


def test_mmap_load_does_not_read_the_file_into_memory(tmp_path):
    path = tmp_path / "big.mpk"
    n = SIZE_MIB << 18  # float32 elements
    modelpack.save({f"t{i}": np.full(n // 16, i, np.float32) for i in range(16)}, path)
    proc = run_python(MEASURE.replace("SIZE", str(SIZE_MIB << 20)), "load", str(path))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["n"] == 16
    assert out["after"] < SIZE_MIB * 0.1, f"RSS grew by {out['after']:.0f} MiB for a {SIZE_MIB} MiB file"


def test_save_does_not_copy_tensor_bytes(tmp_path):
    proc = run_python(MEASURE.replace("SIZE", str(SIZE_MIB << 20)), "save", str(tmp_path / "s.mpk"))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["data"] > SIZE_MIB * 0.9
    assert out["peak_above_base"] < out["data"] + 64, out
    back = modelpack.load(tmp_path / "s.mpk")
    assert len(back) == 16 and float(back["t3"][0]) == 1.0


def test_loaded_array_is_a_view_of_the_map(tmp_path):
    modelpack.save({"a": np.arange(1000.0)}, tmp_path / "v.mpk")
    a = modelpack.load(tmp_path / "v.mpk")["a"]
    assert not a.flags.owndata and a.flags.writeable
    b = modelpack.load(tmp_path / "v.mpk", mmap=False)["a"]
    assert b.flags.owndata and np.array_equal(a, b)
