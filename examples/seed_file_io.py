"""The "File I/O" chapter, with modelpack: tensors, lists, dicts, parameters -- and the architecture too.

    python examples/seed_file_io.py

Each section mirrors the chapter (the pytorch tab), with ``modelpack.save`` /
``modelpack.load`` in place of ``torch.save`` / ``torch.load``: no pickle, so
loading someone else's file cannot run their code. The chapter ends by saying
the architecture has to be saved as code, separately from the parameters; the
last section shows ``modelpack.export`` saving both in one file, and a fresh
Python process that has never seen the ``MLP`` class rebuilding it and getting
the same output. Files go to a temporary folder that is removed at the end.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

import modelpack


class MLP(nn.Module):
    """The chapter's MLP, unchanged: sizes of the inputs are inferred on the first call (LazyLinear)."""

    def __init__(self):
        super().__init__()
        self.hidden = nn.LazyLinear(256)
        self.output = nn.LazyLinear(10)

    def forward(self, x):
        return self.output(F.relu(self.hidden(x)))


# What the fresh process runs: modelpack and torch only, no MLP class anywhere.
RELOAD = """
import sys, torch, modelpack
folder = sys.argv[1]
net = modelpack.load_model(f"{folder}/mlp.mpk")
X, Y = modelpack.load(f"{folder}/X.mpk"), modelpack.load(f"{folder}/Y.mpk")
print(f"  rebuilt {type(net).__name__} with layers: {', '.join(n for n, _ in net.named_children())}")
print(f"  'MLP' defined in this process: {'MLP' in dir(sys.modules['__main__'])}")
print(f"  net(X) == Y everywhere: {bool(torch.equal(net(X), Y))}")
"""


def section(title: str) -> None:
    print(f"\n== {title}")


def tensors(folder: Path) -> None:
    section("Loading and saving tensors")
    x = torch.arange(4)
    modelpack.save(x, folder / "x-file.mpk")
    x2 = modelpack.load(folder / "x-file.mpk")
    print(f"  x2 = {x2}")

    y = torch.zeros(4)
    modelpack.save([x, y], folder / "x-files.mpk")
    x2, y2 = modelpack.load(folder / "x-files.mpk")
    print(f"  (x2, y2) = ({x2}, {y2})")

    mydict = {"x": x, "y": y}
    modelpack.save(mydict, folder / "mydict.mpk")
    mydict2 = modelpack.load(folder / "mydict.mpk")
    print(f"  mydict2 = {mydict2}")


def parameters(folder: Path) -> tuple[MLP, torch.Tensor, torch.Tensor]:
    section("Loading and saving model parameters")
    net = MLP()
    X = torch.randn(size=(2, 20))
    Y = net(X)
    modelpack.save(net.state_dict(), folder / "mlp.params.mpk")

    clone = MLP()
    clone.load_state_dict(modelpack.load(folder / "mlp.params.mpk"))
    clone.eval()
    Y_clone = clone(X)
    print(f"  Y_clone == Y:\n{Y_clone == Y}")
    return net, X, Y


def architecture(folder: Path, net: MLP, X: torch.Tensor, Y: torch.Tensor) -> bool:
    section("Saving the architecture too (exercise 3)")
    modelpack.export(net, folder / "mlp.mpk", example_inputs=(X,))
    modelpack.save(X, folder / "X.mpk")
    modelpack.save(Y.detach(), folder / "Y.mpk")
    spec = modelpack.api.read_spec_text(folder / "mlp.mpk")
    print("  the spec inside mlp.mpk:")
    print("\n".join("    " + line for line in spec.splitlines() if not line.startswith("#")))
    print("  reloading it in a fresh process that has no MLP class:")
    child = subprocess.run([sys.executable, "-c", RELOAD, str(folder)], capture_output=True, text=True,
                           env=_env_with_modelpack())
    print(child.stdout.rstrip())
    if child.returncode != 0:
        print(child.stderr, file=sys.stderr)
    return child.returncode == 0 and "everywhere: True" in child.stdout


def _env_with_modelpack() -> dict[str, str]:
    """The child imports this same modelpack (also when run from a source checkout)."""
    root = str(Path(modelpack.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env


def main() -> int:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="modelpack-seed-") as tmp:
        folder = Path(tmp)
        tensors(folder)
        net, X, Y = parameters(folder)
        ok = architecture(folder, net, X, Y)
    print("\nall done" if ok else "\nthe reloaded model did not reproduce Y", file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
