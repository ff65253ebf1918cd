"""Write the seed corpora for the fuzz harnesses: ``python tests/fuzz/make_seeds.py OUT``.

OUT/open: whole valid files (tensor trees, ZIP64, a spec member, a model file when torch is
there); OUT/load: the same files behind mode byte 0, and their manifests behind mode byte 1;
OUT/validate and OUT/model: every spec under examples/ and tests/data/specs/ behind mode bytes 0 and 1.
Everything is built here from code; nothing is downloaded.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import _harness  # noqa: F401  (sets sys.path)

import numpy as np

from hostile.mpkcraft import mpk
from modelpack import api, tree

ROOT = _harness.ROOT


def _objects() -> dict[str, Any]:
    objs: dict[str, Any] = {
        "default": {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, -2, 3])},
        "nested": {"layers": [{"w": np.ones((3, 2), np.float16)}, {"w": np.zeros(4, np.uint8)}],
                   "step": 7, "lr": 0.5, "name": "x", "flags": (True, None), 3: {"$k": float("nan")}},
        "scalars": {"s": np.float64(2.5), "i": np.int8(-3), "e": np.zeros((0, 4), np.int32)},
        "complex": [np.array([1 + 2j], np.complex64), np.eye(2, dtype=np.complex128)],
        "tuple": (np.arange(3, dtype=np.uint64), "t"),
        "bare": np.arange(5, dtype=np.int16),
    }
    try:
        import torch
    except ImportError:
        return objs
    objs["torch"] = {"w": torch.randn(4, 3), "bf": torch.ones(3, dtype=torch.bfloat16),
                     "f8": torch.zeros(2, dtype=torch.float8_e4m3fn), "tied": None}
    objs["torch"]["tied"] = objs["torch"]["w"]
    return objs


def _files(tmp: Path) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for name, obj in _objects().items():
        api.save(obj, tmp / f"{name}.mpk")
        files[name] = (tmp / f"{name}.mpk").read_bytes()
    tree_json, leaves = tree.encode(_objects()["default"])
    api.write_pack(tmp / "z64.mpk", tree_json, leaves, force_zip64=True)
    files["zip64"] = (tmp / "z64.mpk").read_bytes()
    files["spec"] = mpk(spec=(ROOT / "examples/specs/mlp.yaml").read_bytes()).bytes()
    try:
        import torch
        from torch import nn

        from modelpack.torch.export import export

        model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        export(model, tmp / "model.mpk", torch.randn(2, 4))
        files["model"] = (tmp / "model.mpk").read_bytes()
    except Exception as e:  # an export bug must not stop seeding; say so
        print(f"no model seed: {type(e).__name__}: {e}", file=sys.stderr)
    return files


def _manifest(data: bytes) -> bytes:
    start = data.rindex(b'{"format"')
    end = data.rindex(b"PK\x01\x02", 0, len(data))
    first_cd = data.index(b"PK\x01\x02", start)
    return data[start : min(end, first_cd)]


def main(out: Path) -> None:
    for sub in ("open", "load", "validate", "model"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        files = _files(Path(tmp))
    for name, data in files.items():
        (out / "open" / f"{name}.mpk").write_bytes(data)
        (out / "load" / f"raw-{name}").write_bytes(b"\0" + data)
    for i, patch in enumerate([None, {"$dict": [[1, {"$tensor": "a"}], ["b", {"$tensor": "b"}]]},
                               {"$tuple": [{"$tensor": "a"}, {"$tensor": "b"}, {"$float": "nan"}]}]):
        manifest = _manifest(mpk(tree=patch).bytes())
        (out / "load" / f"manifest-{i}").write_bytes(b"\1" + manifest)
    specs = sorted((ROOT / "examples" / "specs").glob("*.yaml")) + sorted((ROOT / "tests" / "data").rglob("*.yaml"))
    for path in specs:
        text = path.read_bytes()
        (out / "validate" / f"text-{path.stem}").write_bytes(b"\0" + text)
        (out / "validate" / f"pack-{path.stem}").write_bytes(b"\1" + text)
        (out / "model" / f"build-{path.stem}").write_bytes(b"\0" + text)
        (out / "model" / f"pack-{path.stem}").write_bytes(b"\1" + text)
    print(f"seeds: {sum(1 for _ in out.rglob('*') if _.is_file())} files under {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "build/fuzz"))
