"""Every vocabulary layer and op, built with non-default arguments, exports, reproduces and re-exports the same.

This is what checks the argument readers: a value read back wrong gives a spec
whose layer computes something else (the reproduction check fails) or a
different spec on the second export (the fixed point fails).
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from modelpack.torch.build import build  # noqa: E402
from modelpack.torch.export import export_spec  # noqa: E402
from modelpack.vocab import LAYERS, OPS  # noqa: E402


@pytest.fixture(autouse=True)
def _fx_tracer(monkeypatch: pytest.MonkeyPatch) -> None:
    """This file pins the torch.fx tracer's behaviour (the fallback path); the torch.export path is
    tested in tests/test_export_capture.py and tests/models/."""
    import modelpack.torch.export as export_module

    monkeypatch.setattr(export_module, "DEFAULT_CAPTURE", "fx")



class One(nn.Module):
    """Calls the layer on the input; ``pick`` takes element 0 of a tuple output."""

    def __init__(self, layer, pick=False, inputs=1):
        super().__init__()
        self.layer = layer
        self.pick = pick
        self.inputs = inputs

    def forward(self, x):
        out = self.layer(*([x] * self.inputs))
        return out[0] if self.pick else out


def _g(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _ids(*shape):
    return torch.randint(0, 20, shape, generator=torch.Generator().manual_seed(0))


SEQ = _g(2, 5, 6)
IMG = _g(2, 4, 9, 9)

GALLERY = [
    ("Linear", One(nn.Linear(6, 3, bias=False)), _g(2, 6)),
    ("Bilinear", One(nn.Bilinear(6, 6, 2), inputs=2), _g(2, 6)),
    ("Identity", One(nn.Identity()), _g(2, 6)),
    ("Conv1d", One(nn.Conv1d(5, 4, 3, stride=2, padding=2, dilation=2, groups=1, padding_mode="reflect")), SEQ),
    ("Conv2d", One(nn.Conv2d(4, 8, (3, 1), padding="same", groups=4, bias=False)), IMG),
    ("Conv3d", One(nn.Conv3d(2, 3, 2, stride=(1, 2, 1))), _g(2, 2, 4, 5, 6)),
    ("ConvTranspose1d", One(nn.ConvTranspose1d(5, 3, 3, stride=2, output_padding=1)), SEQ),
    ("ConvTranspose2d", One(nn.ConvTranspose2d(4, 2, 2, stride=2, dilation=2, groups=2)), IMG),
    ("BatchNorm1d", One(nn.BatchNorm1d(6, eps=1e-3, momentum=None)), _g(3, 6)),
    ("BatchNorm2d", One(nn.BatchNorm2d(4, affine=False)), IMG),
    ("InstanceNorm2d", One(nn.InstanceNorm2d(4, affine=True, track_running_stats=True)), IMG),
    ("LayerNorm", One(nn.LayerNorm([5, 6], elementwise_affine=True, bias=False)), SEQ),
    ("GroupNorm", One(nn.GroupNorm(2, 4, eps=1e-4)), IMG),
    ("Dropout", One(nn.Dropout(0.3)), _g(2, 6)),
    ("Dropout2d", One(nn.Dropout2d(0.1)), IMG),
    ("Embedding", One(nn.Embedding(20, 4, padding_idx=3, scale_grad_by_freq=True)), _ids(2, 5)),
    ("LSTM", One(nn.LSTM(6, 4, num_layers=2, bidirectional=True, proj_size=2), pick=True), SEQ),
    ("GRU", One(nn.GRU(6, 4, bias=False, batch_first=True, dropout=0.2, num_layers=2), pick=True), SEQ),
    ("MultiheadAttention",
     One(nn.MultiheadAttention(6, 2, add_bias_kv=True, add_zero_attn=True, batch_first=True), pick=True, inputs=3),
     SEQ),
    ("TransformerEncoderLayer",
     One(nn.TransformerEncoderLayer(6, 2, 12, dropout=0.0, activation="gelu", norm_first=True, layer_norm_eps=1e-6)),
     SEQ),
    ("MaxPool1d", One(nn.MaxPool1d(3, stride=1, padding=1, dilation=1, ceil_mode=True)), SEQ),
    ("MaxPool2d", One(nn.MaxPool2d((2, 3), stride=2, dilation=2)), IMG),
    ("AvgPool1d", One(nn.AvgPool1d(2, count_include_pad=False, padding=1)), SEQ),
    ("AvgPool2d", One(nn.AvgPool2d(3, stride=1, divisor_override=2)), IMG),
    ("AdaptiveAvgPool1d", One(nn.AdaptiveAvgPool1d(3)), SEQ),
    ("AdaptiveAvgPool2d", One(nn.AdaptiveAvgPool2d((2, 3))), IMG),
    ("AdaptiveMaxPool1d", One(nn.AdaptiveMaxPool1d(2)), SEQ),
    ("AdaptiveMaxPool2d", One(nn.AdaptiveMaxPool2d(4)), IMG),
    ("Flatten", One(nn.Flatten(0, 1)), IMG),
    ("Unflatten", One(nn.Unflatten(2, (2, 3))), SEQ),
    ("Upsample", One(nn.Upsample(scale_factor=2.0, mode="bilinear", align_corners=True)), IMG),
    ("ReLU", One(nn.ReLU()), _g(2, 6)),
    ("ReLU6", One(nn.ReLU6()), _g(2, 6)),
    ("LeakyReLU", One(nn.LeakyReLU(0.2)), _g(2, 6)),
    ("PReLU", One(nn.PReLU(6, init=0.1)), _g(2, 6)),
    ("ELU", One(nn.ELU(alpha=0.5)), _g(2, 6)),
    ("GELU", One(nn.GELU(approximate="tanh")), _g(2, 6)),
    ("SiLU", One(nn.SiLU()), _g(2, 6)),
    ("Mish", One(nn.Mish()), _g(2, 6)),
    ("Hardswish", One(nn.Hardswish()), _g(2, 6)),
    ("Hardsigmoid", One(nn.Hardsigmoid()), _g(2, 6)),
    ("Sigmoid", One(nn.Sigmoid()), _g(2, 6)),
    ("Tanh", One(nn.Tanh()), _g(2, 6)),
    ("Softmax", One(nn.Softmax(dim=0)), _g(2, 6)),
    ("LogSoftmax", One(nn.LogSoftmax(dim=1)), _g(2, 6)),
]


def test_the_gallery_covers_the_vocabulary():
    # Parameter/Buffer hold tensors no module owns: tests/test_zoo_real.py exports them
    assert {name for name, _, _ in GALLERY} == set(LAYERS) - {"Parameter", "Buffer"}


def _randomise(model):
    """Non-default BatchNorm/InstanceNorm statistics and PReLU slopes."""
    torch.manual_seed(0)
    for m in model.modules():
        if getattr(m, "running_var", None) is not None:
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.mark.parametrize("name, model, x", GALLERY, ids=[g[0] for g in GALLERY])
def test_layer_exports_reproduces_and_reexports_the_same(name, model, x):
    model = _randomise(model)
    text, spec = export_spec(model, (x,))
    assert spec["nodes"][0]["layer"] == name
    rebuilt = build(text).eval()
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    assert export_spec(rebuilt, (x,))[0] == text


def test_arguments_are_written_as_a_person_would():
    text, _ = export_spec(_randomise(One(nn.Conv2d(4, 8, (3, 3), stride=(2, 2), padding=(1, 0)))), (IMG,))
    assert "args: {in_channels: 4, out_channels: 8, kernel_size: 3, stride: 2, padding: [1, 0]}" in text
    text, _ = export_spec(One(nn.MaxPool2d(2)), (IMG,))
    assert "{name: layer, layer: MaxPool2d, args: {kernel_size: 2}}" in text  # stride None, not [2, 2]


class Ops(nn.Module):
    """Each op of the vocabulary, under several of its spellings."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 6)

    def forward(self, x):
        y = self.fc(x)
        acts = [F.relu(y), torch.relu(y), y.relu(), F.relu6(y), F.leaky_relu(y, 0.1), F.elu(y, alpha=0.7),
                F.gelu(y, approximate="tanh"), F.silu(y), F.mish(y), F.hardswish(y), F.hardsigmoid(y),
                torch.sigmoid(y), y.tanh(), F.softmax(y, dim=1), y.log_softmax(-1)]
        z = acts[0]
        for a in acts[1:]:
            z = z + a
        d = torch.sigmoid(y)  # in (0, 1): a safe divisor
        z = torch.sub(z, y) * y - x
        z = torch.div(z, d, rounding_mode="trunc") + z // d + z.div(d) + torch.mul(z, d) / d
        w = torch.matmul(z, y.transpose(0, 1)) @ y
        c = torch.cat((w, z), dim=1)
        s = torch.stack([w, z], 0).flatten(0, 1)
        a, b = torch.chunk(c, 2, dim=1)
        r = a.reshape(-1, 2, 3).permute(0, 2, 1).contiguous().view(-1, 6)
        return r.mean(dim=1, keepdim=True) + b.sum(-1, keepdim=True) + s.sum() + torch.mean(z)


_REAL_MODEL_OPS = {n for n, e in OPS.items() if e.impl == "modelpack"} | {
    "unsqueeze", "unbind", "roll", "exp", "abs", "sqrt", "rsqrt", "linear", "adaptive_avg_pool2d", "avg_pool2d",
    "interpolate", "pad"}


def test_every_op_spelling_reproduces_and_reexports_the_same():
    x = _g(2, 6)
    model = Ops().eval()
    text, spec = export_spec(model, (x,))
    ops = {n.get("op") for n in spec["nodes"]}
    # the ops real models added (issue 5) are exported by tests/test_zoo_real.py
    assert {n for n, e in OPS.items() if e.impl != "aten"} - (ops - {None}) <= _REAL_MODEL_OPS
    assert "contiguous" not in text
    rebuilt = build(text).eval()
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    assert export_spec(rebuilt, (x,))[0] == text
