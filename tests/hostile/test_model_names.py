"""Node names equal to the interpreter's own attributes are plain children: collision is impossible by construction.

Children go straight into the module registries (``_modules``, ``_parameters``,
``_buffers``) and the interpreter reads them only from there, so a node named
``spec``, ``_steps`` or ``_run`` builds, runs, saves and loads like any other.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import modelpack  # noqa: E402
from modelpack.cli import main  # noqa: E402
from modelpack.torch.build import SpecModule  # noqa: E402

# every attribute SpecModule sets or defines itself (data and methods), read off the class and an instance
_OWN = sorted({n for n in vars(SpecModule) if not (n.startswith("__") and n.endswith("__"))}
              | {"spec", "input_names", "_steps", "_release", "_inplace", "_output_keys", "_output_refs"})


def _spec(names: list[str]) -> str:
    nodes = ["  - {name: x0, layer: Linear, args: {in_features: 4, out_features: 4}}"]
    prev = "x0"
    for i, n in enumerate(names):
        kind = "layer: Linear, args: {in_features: 4, out_features: 4}" if i % 3 else \
            "layer: Parameter, args: {shape: [4]}"
        if "Parameter" in kind:
            nodes.append(f"  - {{name: {n}, {kind}, in: []}}")
            nodes.append(f"  - {{name: {n}_sum, op: add, in: [{prev}, {n}]}}")
            prev = f"{n}_sum"
        else:
            nodes.append(f"  - {{name: {n}, {kind}, in: [{prev}]}}")
            prev = n
    return "modelpack: 1\ninputs: {x: {shape: [batch, 4]}}\nnodes:\n" + "\n".join(nodes) + f"\noutputs: [{prev}]\n"


def _write_pack(path: Path, model: SpecModule, text: str) -> None:
    from modelpack import tree
    from modelpack.api import write_pack

    tree_json, leaves = tree.encode(model.state_dict())
    write_pack(path, tree_json, leaves, spec_text=text)


def _valid(name: str) -> bool:
    try:
        modelpack.validate(_spec([name]))
    except modelpack.SpecError:  # torch's own nn.Module attributes (training, forward...) are refused by name
        return False
    return True


def test_interpreter_attribute_names_are_plain_children(tmp_path: Path) -> None:
    names = [n for n in _OWN if _valid(n)]
    assert {"spec", "_steps", "_run", "input_names", "_layer", "_state"} <= set(names)
    text = _spec(names)
    model = modelpack.build(text)
    x = torch.randn(3, 4)
    want = model(x)
    for n in names:
        assert any(k == n or k.startswith(n + ".") for k in model.state_dict()), n
    path = tmp_path / "m.mpk"
    # export re-traces with torch.fx, whose get_submodule answers with a method for a child named
    # like one (`_collect`): write the pack from the spec and state_dict directly, as a file could be
    _write_pack(path, model, text)
    again = modelpack.load_model(path)
    assert torch.equal(again(x), want)
    out = io.StringIO()
    assert main(["inspect", str(path)], out=out) == 0
    assert main(["verify", str(path)], out=out) == 0
