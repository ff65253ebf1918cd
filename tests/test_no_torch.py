"""Everything that needs no torch works with torch impossible to import."""

from __future__ import annotations

from conftest import run_python

BLOCK_TORCH = r"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, Block())
"""


def test_numpy_save_load_without_torch(tmp_path):
    code = BLOCK_TORCH + r"""
import numpy as np, modelpack
path = sys.argv[1]
obj = {"a": np.arange(4), "b": [np.zeros((2, 3), np.float16), 1.5, (None, "x")]}
modelpack.save(obj, path)
back = modelpack.load(path, verify=True)
assert np.array_equal(back["a"], obj["a"]) and back["b"][1:] == obj["b"][1:]
with modelpack.open(path) as pack:
    assert pack["a"].tolist() == [0, 1, 2, 3]
modelpack.verify(path)
assert "torch" not in sys.modules
print("ok")
"""
    proc = run_python(code, str(tmp_path / "n.mpk"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_torch_file_without_torch_says_what_to_install(tmp_path, torch):
    import modelpack

    modelpack.save({"w": torch.zeros(2)}, tmp_path / "t.mpk")
    code = BLOCK_TORCH + r"""
import modelpack
try:
    modelpack.load(sys.argv[1])
except modelpack.ModelPackError as e:
    print(type(e).__name__, e)
"""
    proc = run_python(code, str(tmp_path / "t.mpk"))
    assert "MissingDependencyError" in proc.stdout and "install torch" in proc.stdout, proc.stdout + proc.stderr
