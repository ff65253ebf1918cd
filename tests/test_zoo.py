"""Every zoo model exports, then loads in a fresh process that has never seen its class.

The parent exports each model of ``tests/zoo_models.py`` and saves two input
sets with the original's outputs (the export example at batch 2, and another
batch size) with ``modelpack.save``. One child process -- ``python -c`` with
only modelpack importable, and a check that ``zoo_models`` was never imported
-- loads every model with ``load_model``, runs both input sets and reports,
per model, whether the outputs are bit-identical. One child for the whole zoo
keeps CI time down (torch is imported once).
"""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

import modelpack  # noqa: E402

from conftest import run_python  # noqa: E402
from zoo_models import ZOO  # noqa: E402

_CHILD = r"""
import json, sys
import torch
import modelpack

def leaves(v):
    if isinstance(v, dict):
        return [x for k in sorted(v) for x in leaves(v[k])]
    if isinstance(v, (tuple, list)):
        return [x for item in v for x in leaves(item)]
    return [v]

def same(a, b):
    la, lb = leaves(a), leaves(b)
    return len(la) == len(lb) and all(x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y)
                                      for x, y in zip(la, lb))

folder, names = sys.argv[1], sys.argv[2:]
report = {"zoo_imported": any("zoo_models" in m for m in sys.modules)}
for name in names:
    model = modelpack.load_model(f"{folder}/{name}.mpk")
    io = modelpack.load(f"{folder}/{name}.io.mpk")
    with torch.no_grad():
        report[name] = {
            "type": type(model).__name__,
            "training": model.training,
            "example": same(model(*io["example"]), io["example_out"]),
            "other_batch": same(model(*io["other"]), io["other_out"]),
        }
report["zoo_imported_after"] = any("zoo_models" in m for m in sys.modules)
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def zoo_report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("zoo")
    for name, make in ZOO.items():
        model, example, other = make()
        modelpack.export(model, folder / f"{name}.mpk", example)
        with torch.no_grad():
            io = {"example": list(example), "example_out": model(*example),
                  "other": list(other), "other_out": model(*other)}
        modelpack.save(io, folder / f"{name}.io.mpk")
    proc = run_python(_CHILD, str(folder), *ZOO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_child_never_saw_the_classes(zoo_report):
    assert zoo_report["zoo_imported"] is False
    assert zoo_report["zoo_imported_after"] is False


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_model_round_trips_without_its_class(zoo_report, name):
    result = zoo_report[name]
    assert result["type"] == "SpecModule"
    assert result["training"] is False  # load_model gives eval mode
    assert result["example"], f"{name}: outputs differ on the export example"
    assert result["other_batch"], f"{name}: outputs differ at another batch size"
