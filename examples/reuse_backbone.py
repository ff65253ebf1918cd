"""Reuse the first layers of a packed network under a new head, and fine-tune it.

    python examples/reuse_backbone.py [WORKDIR]

1. A small CNN (a classifier over 10 classes) is exported to ``cnn.mpk``.
2. ``load_model(path, outputs=["features.pool"])`` cuts the packed graph at a node:
   the result computes the features and holds only the layers they need, with the
   file's tensors memory-mapped (copy-on-write: training never touches the file).
3. A new 3-class head goes on top; the whole thing fine-tunes on random data and
   the loss goes down.
4. The same weights can go into a model written in code: ``load_weights`` with a
   prefix copies the matching tensors and reports what matched, what was missing
   and what was unused.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

import modelpack


class SmallCNN(nn.Module):
    """The network that gets packed: a feature extractor and a 10-class head."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential()
        self.features.add_module("conv1", nn.Conv2d(1, 8, 3, padding=1))
        self.features.add_module("bn1", nn.BatchNorm2d(8))
        self.features.add_module("relu1", nn.ReLU())
        self.features.add_module("conv2", nn.Conv2d(8, 16, 3, stride=2, padding=1))
        self.features.add_module("relu2", nn.ReLU())
        self.features.add_module("pool", nn.AdaptiveAvgPool2d(1))
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.features(x)))


class Transfer(nn.Module):
    """The new model written in code: the same feature extractor, a different head."""

    def __init__(self, backbone: nn.Module, classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(16, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def fine_tune(model: nn.Module, steps: int = 8) -> list[float]:
    """A few Adam steps on a fixed random batch; returns the losses."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(32, 1, 16, 16, generator=g), torch.randint(0, 3, (32,), generator=g)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    losses = []
    for step in range(steps):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        print(f"step {step}: loss {loss.item():.4f}")
    return losses


def main(workdir: Path) -> None:
    torch.manual_seed(0)
    path = workdir / "cnn.mpk"
    original = SmallCNN().eval()
    modelpack.export(original, path, example_inputs=(torch.randn(2, 1, 16, 16),))
    print(f"packed {path.name}: {', '.join(modelpack.load(path))}")

    # 2. cut the packed graph at the pooled features: no SmallCNN class needed
    backbone = modelpack.load_model(path, outputs=["features.pool"])
    print("backbone layers:", ", ".join(name for name, _ in backbone.named_children()))
    x = torch.randn(4, 1, 16, 16)
    assert torch.equal(backbone(x), original.features(x)), "the cut reproduces the original features"

    # 3. new head, fine-tune everything
    print("fine-tuning the packed backbone under a new 3-class head")
    losses = fine_tune(Transfer(backbone, classes=3))
    print(f"loss {losses[0]:.4f} -> {losses[-1]:.4f}")

    # 4. the same weights into a model written in code
    fresh = SmallCNN().features
    report = modelpack.load_weights(fresh, path, prefix="features.")
    print("load_weights:", report)
    assert torch.equal(fresh.conv1.weight, original.features.conv1.weight)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(Path(tmp))
