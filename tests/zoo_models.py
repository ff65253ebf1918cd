"""A zoo of small models written the way people write them, for the export round-trip tests.

Each model is ordinary PyTorch code: custom ``nn.Module`` classes, ``F.relu``
next to ``nn.ReLU``, ``x.view``, ``out += identity``, tuple unpacking of RNN
outputs, a weight tied by assignment. ``tests/test_zoo.py`` exports every one
and reloads it in a fresh process that never imports this file, so anything
the spec fails to carry shows up as a difference in outputs.

``ZOO[name]()`` returns ``(model, example_inputs, other_inputs)``: the example
the model is exported with (batch 2) and a second set of inputs with another
batch size (the exported spec must keep the batch dimension free).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ZOO", "SeedMLP", "LeNet5", "ResidualNet", "LSTMClassifier", "GRUClassifier", "TiedLM", "UNet"]

Example = tuple[nn.Module, tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]


class SeedMLP(nn.Module):
    """Exactly the seed chapter's MLP: LazyLinear layers and F.relu."""

    def __init__(self):
        super().__init__()
        self.hidden = nn.LazyLinear(256)
        self.output = nn.LazyLinear(10)

    def forward(self, x):
        return self.output(F.relu(self.hidden(x)))


class MLP(nn.Module):
    """Sequential body with dropout and BatchNorm1d, GELU head, softmax over classes."""

    def __init__(self, d_in=20, hidden=64, classes=5):
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(d_in, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Dropout(0.2),
            nn.Linear(hidden, hidden), nn.GELU(),
        )
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        return F.log_softmax(self.head(self.body(x)), dim=-1)


class LeNet5(nn.Module):
    """LeNet-5 with max pooling and ReLU, flattening with torch.flatten."""

    def __init__(self, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, kernel_size=5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5)
        self.pool = nn.MaxPool2d(2, 2)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, classes)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class BasicBlock(nn.Module):
    """torchvision-style basic block: one ReLU module called twice, ``out += identity``."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResidualNet(nn.Module):
    """A small ResNet: stem, two stages of basic blocks, global average pool, linear head."""

    def __init__(self, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.layer1 = nn.Sequential(BasicBlock(8, 8), BasicBlock(8, 8))
        self.layer2 = nn.Sequential(BasicBlock(8, 16, stride=2), BasicBlock(16, 16))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        x = self.avgpool(x)
        return self.fc(x.flatten(1))


class LSTMClassifier(nn.Module):
    """Token ids -> embeddings -> 2-layer LSTM; classify the top layer's last hidden state."""

    def __init__(self, vocab=50, dim=16, hidden=24, classes=3):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim, padding_idx=0)
        self.lstm = nn.LSTM(dim, hidden, num_layers=2, batch_first=True)
        self.fc = nn.Linear(hidden, classes)

    def forward(self, tokens):
        out, (h, c) = self.lstm(self.embed(tokens))
        return self.fc(h[-1])


class GRUClassifier(nn.Module):
    """Bidirectional GRU over feature sequences; both directions' final states concatenated."""

    def __init__(self, features=6, hidden=12, classes=4):
        super().__init__()
        self.gru = nn.GRU(features, hidden, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(2 * hidden, classes)

    def forward(self, x):
        _, h = self.gru(x)
        return self.fc(torch.cat([h[-2], h[-1]], dim=1))


class TiedLM(nn.Module):
    """A tiny language model whose output layer shares the embedding's weight (tied by assignment)."""

    def __init__(self, vocab=40, dim=16):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.rnn = nn.GRU(dim, dim, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.decoder = nn.Linear(dim, vocab, bias=False)
        self.decoder.weight = self.embed.weight

    def forward(self, tokens):
        hidden, _ = self.rnn(self.embed(tokens))
        return self.decoder(self.norm(hidden))


class DoubleConv(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        )

    def forward(self, x):
        return self.net(x)


class UNet(nn.Module):
    """A two-level U-Net: skip connections joined with torch.cat, transposed-conv upsampling."""

    def __init__(self, cin=3, classes=2, width=8):
        super().__init__()
        self.inc = DoubleConv(cin, width)
        self.down1 = nn.Sequential(nn.MaxPool2d(2), DoubleConv(width, 2 * width))
        self.down2 = nn.Sequential(nn.MaxPool2d(2), DoubleConv(2 * width, 4 * width))
        self.up1 = nn.ConvTranspose2d(4 * width, 2 * width, 2, stride=2)
        self.conv1 = DoubleConv(4 * width, 2 * width)
        self.up2 = nn.ConvTranspose2d(2 * width, width, 2, stride=2)
        self.conv2 = DoubleConv(2 * width, width)
        self.outc = nn.Conv2d(width, classes, 1)

    def forward(self, x):
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        y = self.conv1(torch.cat([x2, self.up1(x3)], dim=1))
        y = self.conv2(torch.cat([x1, self.up2(y)], dim=1))
        return self.outc(y)


class TwoHeads(nn.Module):
    """Named outputs (a dict), a chunked tensor, and a Python-level loop over layers."""

    def __init__(self, d=12):
        super().__init__()
        self.blocks = nn.ModuleList(nn.Linear(d, d) for _ in range(3))
        self.norm = nn.LayerNorm(d)
        self.cls = nn.Linear(d // 2, 3)
        self.reg = nn.Linear(d // 2, 1)

    def forward(self, x):
        for block in self.blocks:
            x = x + torch.tanh(block(x))
        a, b = self.norm(x).chunk(2, dim=-1)
        return {"logits": self.cls(a), "score": torch.sigmoid(self.reg(b))}


class TinyTransformer(nn.Module):
    """Token embeddings, one encoder layer, attention pooling with MultiheadAttention, mean over time."""

    def __init__(self, vocab=30, d=16, heads=2, classes=3):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.encoder = nn.TransformerEncoderLayer(d, heads, dim_feedforward=32, dropout=0.0, batch_first=True)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.head = nn.Linear(d, classes)

    def forward(self, tokens):
        x = self.encoder(self.embed(tokens))
        pooled, _weights = self.attn(x, x, x)
        return self.head(pooled.mean(dim=1))


def _seeded(build: Callable[[], nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    model = build()
    _randomise_norm_stats(model)
    return model.eval()


def _randomise_norm_stats(model: nn.Module) -> None:
    """Non-trivial BatchNorm running statistics, so buffers that went missing would show."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def _floats(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))


def _tokens(vocab: int, *shape: int) -> torch.Tensor:
    return torch.randint(1, vocab, shape, generator=torch.Generator().manual_seed(sum(shape)))


ZOO: dict[str, Callable[[], Example]] = {
    "seed_mlp": lambda: (_seeded(SeedMLP), (_floats(2, 20),), (_floats(5, 20),)),
    "mlp": lambda: (_seeded(MLP), (_floats(2, 20),), (_floats(5, 20),)),
    "lenet5": lambda: (_seeded(LeNet5), (_floats(2, 1, 28, 28),), (_floats(3, 1, 28, 28),)),
    "resnet": lambda: (_seeded(ResidualNet), (_floats(2, 3, 16, 16),), (_floats(3, 3, 16, 16),)),
    "lstm_classifier": lambda: (_seeded(LSTMClassifier), (_tokens(50, 2, 7),), (_tokens(50, 4, 7),)),
    "gru_classifier": lambda: (_seeded(GRUClassifier), (_floats(2, 5, 6),), (_floats(3, 5, 6),)),
    "tied_lm": lambda: (_seeded(TiedLM), (_tokens(40, 2, 9),), (_tokens(40, 3, 9),)),
    "unet": lambda: (_seeded(UNet), (_floats(2, 3, 16, 16),), (_floats(1, 3, 16, 16),)),
    "two_heads": lambda: (_seeded(TwoHeads), (_floats(2, 12),), (_floats(4, 12),)),
    "tiny_transformer": lambda: (_seeded(TinyTransformer), (_tokens(30, 2, 6),), (_tokens(30, 3, 6),)),
}
