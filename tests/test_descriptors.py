"""Loaded tensors and forgotten packs hold no file descriptor; Pack is a real read-only Mapping."""

from __future__ import annotations

import gc
import json
import os
from collections.abc import Mapping

import numpy as np
import pytest

import modelpack

from conftest import run_python

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts /proc/self/fd (Linux)")

# 10,000 names of a tiny file (one torch tensor, one numpy array; hard links, which take a tenth of
# the time copies do) loaded at a 256-descriptor limit, every result kept; then dropped, which must
# unmap every file again.
MANY_FILES = r"""
import gc, json, os, resource, sys
import numpy as np, torch
import modelpack
folder, n = sys.argv[1], int(sys.argv[2])
modelpack.save({"t": torch.arange(4.0), "a": np.arange(3)}, os.path.join(folder, "one.mpk"))
for i in range(n):
    os.link(os.path.join(folder, "one.mpk"), os.path.join(folder, f"{i}.mpk"))
def maps():
    with open("/proc/self/maps") as f:
        return sum(folder in line for line in f)
resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
kept = [modelpack.load(os.path.join(folder, f"{i}.mpk")) for i in range(n)]
kept[7]["t"] += 1
kept[7]["a"] *= 2
out = {"fds": len(os.listdir("/proc/self/fd")), "maps": maps(),
       "t": [x["t"].tolist() for x in kept[6:8]], "a": [x["a"].tolist() for x in kept[6:8]],
       "kinds": sorted({type(v).__module__.split(".")[0] for v in kept[-1].values()})}
del kept
gc.collect()
out["maps_after"] = maps()
print(json.dumps(out))
"""


def test_ten_thousand_loaded_files_fit_in_256_descriptors(tmp_path, torch):
    n = 10_000
    proc = run_python(MANY_FILES, str(tmp_path), str(n), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["fds"] < 16, out
    assert out["maps"] >= n  # every file is still mapped (zero copy), through no descriptor
    assert out["maps_after"] == 0  # and unmapped once its tensors are gone
    assert out["kinds"] == ["numpy", "torch"]
    # copy-on-write: each load's writes stay in that load, and the file never changes
    assert out["t"] == [[0.0, 1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0]]
    assert out["a"] == [[0, 1, 2], [0, 2, 4]]
    assert modelpack.load(tmp_path / "7.mpk", mmap=False)["a"].tolist() == [0, 1, 2]


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_open_without_close_releases_its_descriptor(tmp_path):
    path = tmp_path / "p.mpk"
    modelpack.save({"w": np.arange(6.0)}, path)
    gc.collect()
    before = _fds()
    kept = [modelpack.open(path)["w"] for _ in range(200)]  # each pack is dropped at once
    assert _fds() == before
    pack = modelpack.open(path)
    assert _fds() == before + 1
    del pack
    gc.collect()
    assert _fds() == before
    assert all(np.array_equal(w, np.arange(6.0)) for w in kept)


def test_tensors_outlive_a_closed_pack(tmp_path):
    path = tmp_path / "p.mpk"
    modelpack.save({"w": np.arange(6.0)}, path)
    with modelpack.open(path) as pack:
        w = pack["w"]
    w[0] = 42.0
    assert w.tolist() == [42.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    with pytest.raises(ValueError, match="the pack is closed"):
        pack["w"]
    pack.close()  # closing twice is harmless
    assert modelpack.load(path)["w"][0] == 0.0


def test_pack_is_a_read_only_mapping(tmp_path):
    path = tmp_path / "m.mpk"
    modelpack.save({"b": np.arange(2), "a": [np.ones(3, np.float32)]}, path)
    with modelpack.open(path) as pack:
        assert isinstance(pack, Mapping)
        assert len(pack) == 2 and list(pack) == ["b", "a.0"] and pack.keys() == ["b", "a.0"]
        assert "a.0" in pack and "a" not in pack and 3 not in pack
        assert pack.get("nope") is None and pack.get("nope", 7) == 7
        assert np.array_equal(pack.get("b"), np.arange(2))
        items = dict(pack.items())
        assert list(items) == ["b", "a.0"] and items["a.0"].dtype == np.float32
        assert [v.shape for v in pack.values()] == [(2,), (3,)]
        with pytest.raises(KeyError, match="no tensor 'nope'"):
            pack["nope"]
        with modelpack.open(path) as same_file:
            assert pack == pack and pack != same_file  # identity: comparing never reads tensors
        assert len({pack}) == 1
