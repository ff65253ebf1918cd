"""Wall time of ``modelpack inspect`` on an exported ResNet-50, counting interpreter start (run by hand).

    python benchmarks/inspect_time.py            # 5 runs each
    python benchmarks/inspect_time.py --reps 3

The ResNet-50 is built here with torchvision's layout (Bottleneck blocks 3-4-6-3,
25.6 M parameters), so torchvision is not needed. Each run is a fresh
``python -m modelpack inspect FILE`` process; next to it, in the same run, a bare
``python -c "import torch"`` and ``python -c "import modelpack"`` give the floor
the command cannot go below. Target (issue 11): inspect under 2 s wall.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

import modelpack


class Bottleneck(nn.Module):
    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = width * 4
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet50(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin, layers = 64, []
        for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            seq = []
            for i in range(blocks):
                seq.append(Bottleneck(cin, width, stride if i == 0 else 1))
                cin = width * 4
            layers.append(nn.Sequential(*seq))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2048, 1000)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _wall(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="runs per case (the median is shown)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "resnet50.mpk"
        modelpack.export(ResNet50().eval(), path, (torch.randn(1, 3, 224, 224),))
        cases = {
            "python -c 'import modelpack'": [sys.executable, "-c", "import modelpack"],
            "python -c 'import torch'": [sys.executable, "-c", "import torch"],
            "modelpack inspect resnet50.mpk": [sys.executable, "-m", "modelpack", "inspect", str(path)],
        }
        times = {name: [_wall(argv) for _ in range(args.reps)] for name, argv in cases.items()}
    floor = statistics.median(times["python -c 'import torch'"])
    print("| case | median s | min s | / import torch |\n| --- | --- | --- | --- |")
    for name, ts in times.items():
        print(f"| {name} | {statistics.median(ts):.2f} | {min(ts):.2f} | {statistics.median(ts) / floor:.2f} |")


if __name__ == "__main__":
    main()
