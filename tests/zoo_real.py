"""Small architectures with the constructs real published models use (issue 5), for CI without torchvision.

Each model is written here from scratch in the style of today's vision models:
class tokens and position embeddings held as bare parameters, shape arithmetic
(``n, c, h, w = x.shape``, ``h // p``, ``torch._assert``), slicing (``x[:, 0]``),
multi-output calls (MultiheadAttention, chunk, unbind), literal operands
(``x * 0.5``), a norm subclass whose forward reads its own weight, layer scale,
dropout and stochastic depth that follow the module's train/eval mode, a
``torch.fx.wrap``-ed helper, dict outputs with resize-to-input, and an auxiliary
head forward never calls in eval mode, and nn.TransformerEncoder.

``REAL_ZOO[name]()`` returns ``(model, example_inputs, other_inputs)`` like
``tests/zoo_models.py``; the other inputs change the batch size (and, where the
architecture allows, the resolution); ``REAL_DYNAMIC[name]`` names those dims
(export's ``dynamic_dims``): a size the spec declares as an int is fixed.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

__all__ = ["REAL_ZOO", "REAL_DYNAMIC", "TinyViT", "ShuffleMix", "TinySeg", "WindowMixer", "EncoderStack", "sample_drop"]

Example = tuple[nn.Module, tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]


# ----------------------------------------------------------------------------- a wrapped library helper


def sample_drop(x: torch.Tensor, p: float, mode: str, training: bool = True) -> torch.Tensor:
    """Stand-in for torchvision.ops.stochastic_depth (same name and signature; CI has no torchvision)."""
    if not training or p == 0.0:
        return x
    keep = torch.rand([x.shape[0]] + [1] * (x.ndim - 1), device=x.device) >= p
    return x * keep / (1.0 - p)


# The exporter recognises fx-wrapped helpers by qualified name from a fixed table; present this
# one under torchvision's name so the rule is exercised without installing torchvision.
sample_drop.__module__ = "torchvision.ops.stochastic_depth"
sample_drop.__qualname__ = "stochastic_depth"
torch.fx.wrap("sample_drop")


# ----------------------------------------------------------------------------- models


class ChannelsLastNorm(nn.LayerNorm):
    """A norm subclass with its own forward: tracing walks through and reads weight/bias directly."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class EncoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.gamma = nn.Parameter(torch.full((dim,), 0.5))  # layer scale
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        y, _ = self.attn(y, y, y, need_weights=False)
        x = x + sample_drop(y, self.drop_path, "row", self.training)
        y = self.mlp(self.norm2(x))
        return x + self.gamma * F.dropout(y, p=0.25, training=self.training)


class TinyViT(nn.Module):
    """Patches + class token + position embedding, two encoder blocks, head on x[:, 0]."""

    def __init__(self, image: int = 16, patch: int = 4, dim: int = 32, classes: int = 10) -> None:
        super().__init__()
        self.image, self.patch = image, patch
        self.stem = nn.Conv2d(3, dim, patch, stride=patch)
        self.stem_norm = ChannelsLastNorm(dim)
        self.class_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embedding = nn.Parameter(torch.randn(1, (image // patch) ** 2 + 1, dim) * 0.02)
        self.blocks = nn.Sequential(EncoderBlock(dim, 4, 0.1), EncoderBlock(dim, 4, 0.1))
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        torch._assert(h == self.image, f"expected height {self.image}")
        x = self.stem_norm(self.stem(x))
        x = x.reshape(n, x.size(1), (h // self.patch) * (w // self.patch)).permute(0, 2, 1)
        token = self.class_token.expand(n, -1, -1)
        x = torch.cat([token, x], dim=1) + self.pos_embedding
        x = self.blocks(x)
        return self.head(x[:, 0] * 0.5)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.size()
    x = x.view(n, groups, c // groups, h, w)
    return torch.transpose(x, 1, 2).contiguous().view(n, -1, h, w)


class ShuffleMix(nn.Module):
    """Channel shuffle (x.size() arithmetic), chunk/unbind, functional pools, an aux head unused in eval."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.branch = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.BatchNorm2d(4), nn.Hardswish())
        self.fc = nn.Linear(8 + 4, 5)
        self.aux = nn.Linear(8, 5)  # only used while training

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.conv(x), kernel_size=2, stride=2)
        a, b = x.chunk(2, dim=1)
        x = channel_shuffle(torch.cat([a, self.branch(b)], dim=1), 2)
        x = F.avg_pool2d(x, 3, stride=1, padding=1)
        rows = torch.unbind(x[:, :4], dim=1)
        extra = F.adaptive_avg_pool2d(rows[0].unsqueeze(1) - rows[3].unsqueeze(1), (1, 1)).flatten(1)
        pooled = x.mean([2, 3])
        if self.training:
            return self.aux(pooled)
        return self.fc(torch.cat([pooled, F.hardswish(extra).expand(-1, 4)], dim=1))


class TinySeg(nn.Module):
    """Segmentation-style: dict output {"out", "aux"}, resized back to the input's own size."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.down = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
        self.down2 = nn.Sequential(nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU())
        self.out = nn.Conv2d(8, classes, 1)
        self.aux = nn.Conv2d(8, classes, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        size = x.shape[-2:]
        mid = self.down(F.pad(x, (1, 1, 1, 1), mode="reflect"))
        deep = self.down2(mid)
        result = OrderedDict()
        result["out"] = F.interpolate(self.out(deep), size=size, mode="bilinear", align_corners=False)
        result["aux"] = F.interpolate(self.aux(mid), size=size, mode="nearest")
        return result


class WindowMixer(nn.Module):
    """Swin-like token mixing: roll, window reshape with floordiv, a relative-position buffer gathered."""

    def __init__(self, dim: int = 8, window: int = 2) -> None:
        super().__init__()
        self.window = window
        self.proj = nn.Linear(dim, dim)
        self.table = nn.Parameter(torch.randn((2 * window - 1) ** 2, 1))
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + window - 1
        self.register_buffer("index", (rel[..., 0] * (2 * window - 1) + rel[..., 1]).flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        p = self.window
        x = torch.roll(x, shifts=(-1, -1), dims=(1, 2))
        win = x.view(b, h // p, p, w // p, p, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, p * p, c)
        bias = self.table[self.index.view(-1)].view(p * p, p * p)
        attn = torch.softmax(win @ win.transpose(-2, -1) * c ** -0.5 + bias, dim=-1)
        out = self.proj(attn @ win)
        out = out.view(b, h // p, w // p, p, p, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
        return torch.roll(out, shifts=(1, 1), dims=(1, 2))[..., 0::2, :]


class EncoderStack(nn.Module):
    """nn.TransformerEncoder (a container whose own forward branches on masks) over token features."""

    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(dim, 2, 32, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(dim), enable_nested_tensor=False)
        self.head = nn.Linear(dim, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x)[:, -1])


def _seeded(build: Callable[[], nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    model = build()
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model.eval()


def _floats(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))


REAL_ZOO: dict[str, Callable[[], Example]] = {
    "tiny_vit": lambda: (_seeded(TinyViT), (_floats(2, 3, 16, 16),), (_floats(3, 3, 16, 16),)),
    "shuffle_mix": lambda: (_seeded(ShuffleMix), (_floats(2, 3, 12, 12),), (_floats(3, 3, 20, 16),)),
    "tiny_seg": lambda: (_seeded(TinySeg), (_floats(2, 3, 16, 16),), (_floats(1, 3, 24, 20),)),
    "window_mixer": lambda: (_seeded(WindowMixer), (_floats(2, 4, 4, 8),), (_floats(3, 6, 8, 8),)),
    "encoder_stack": lambda: (_seeded(EncoderStack), (_floats(2, 5, 16),), (_floats(3, 7, 16),)),
}

_IMAGE = {"x": {0: "batch", 2: "height", 3: "width"}}
# the dims each model's other inputs change: named at export, so the spec declares them symbolic
REAL_DYNAMIC: dict[str, dict[str, dict[int, str]]] = {
    "tiny_vit": {"x": {0: "batch"}},
    "shuffle_mix": _IMAGE,
    "tiny_seg": _IMAGE,
    "window_mixer": {"x": {0: "batch", 1: "height", 2: "width"}},
    "encoder_stack": {"x": {0: "batch", 1: "seq"}},
}
