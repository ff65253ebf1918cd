"""Test helpers: small hand-written specs and a way to pack a built module as a model file.

Until the exporter exists, model files for tests are written directly:
``build(spec)`` -> state_dict -> ``tree.encode`` -> ``write_pack`` with the spec text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from modelpack import api, tree
from modelpack.torch.build import build

MLP = """\
modelpack: 1
name: mlp
inputs:
  x: {shape: [batch, 20], dtype: float32}
nodes:
  - {name: hidden, layer: Linear, args: {in_features: 20, out_features: 64}}
  - {name: act, op: relu}
  - {name: output, layer: Linear, args: {in_features: 64, out_features: 10}}
outputs: [output]
"""

LENET = """\
modelpack: 1
name: lenet
inputs:
  x: {shape: [batch, 1, 28, 28]}
nodes:
  - {name: conv1, layer: Conv2d, args: {in_channels: 1, out_channels: 6, kernel_size: 5, padding: 2}}
  - {name: act1, layer: ReLU}
  - {name: pool1, layer: MaxPool2d, args: {kernel_size: 2}}
  - {name: conv2, layer: Conv2d, args: {in_channels: 6, out_channels: 16, kernel_size: 5}}
  - {name: act2, op: relu}
  - {name: pool2, layer: AvgPool2d, args: {kernel_size: 2}}
  - {name: flat, op: flatten, args: {start_dim: 1}}
  - {name: fc1, layer: Linear, args: {in_features: 400, out_features: 120}}
  - {name: act3, op: relu}
  - {name: fc2, layer: Linear, args: {in_features: 120, out_features: 84}}
  - {name: act4, op: tanh}
  - {name: fc3, layer: Linear, args: {in_features: 84, out_features: 10}}
outputs: [fc3]
"""

RESNET = """\
modelpack: 1
name: resnet_tiny
inputs:
  x: {shape: [batch, 3, 16, 16]}
blocks:
  basic:
    params: [channels]
    inputs: [x]
    nodes:
      - {name: conv1, layer: Conv2d, in: x, args: {in_channels: {param: channels}, out_channels: {param: channels},
         kernel_size: 3, padding: 1, bias: false}}
      - {name: bn1, layer: BatchNorm2d, args: {num_features: {param: channels}}}
      - {name: relu1, op: relu}
      - {name: conv2, layer: Conv2d, args: {in_channels: {param: channels}, out_channels: {param: channels},
         kernel_size: 3, padding: 1, bias: false}}
      - {name: bn2, layer: BatchNorm2d, args: {num_features: {param: channels}}}
      - {name: sum, op: add, in: [bn2, x]}
      - {name: out, op: relu}
    outputs: [out]
nodes:
  - {name: stem, layer: Conv2d, args: {in_channels: 3, out_channels: 8, kernel_size: 3, padding: 1}}
  - {name: layer1.0, block: basic, args: {channels: 8}}
  - {name: layer1.1, block: basic, args: {channels: 8}}
  - {name: pool, layer: AdaptiveAvgPool2d, args: {output_size: 1}}
  - {name: flat, layer: Flatten}
  - {name: fc, layer: Linear, args: {in_features: 8, out_features: 5}}
outputs: [fc]
"""

LSTM = """\
modelpack: 1
name: lstm_classifier
inputs:
  tokens: {shape: [batch, seq], dtype: int64}
nodes:
  - {name: embed, layer: Embedding, args: {num_embeddings: 50, embedding_dim: 16}}
  - {name: rnn, layer: LSTM, args: {input_size: 16, hidden_size: 24, batch_first: true}}
  - {name: seq_out, op: getitem, in: rnn, args: {index: 0}}
  - {name: state, op: getitem, in: rnn, args: {index: 1}}
  - {name: h_n, op: getitem, in: state, args: {index: 0}}
  - {name: last, op: getitem, in: h_n, args: {index: 0}}
  - {name: pooled, op: mean, in: seq_out, args: {dim: 1}}
  - {name: both, op: cat, in: [pooled, last], args: {dim: 1}}
  - {name: head, layer: Linear, args: {in_features: 48, out_features: 3}}
outputs: [head]
"""

GRU = """\
modelpack: 1
name: gru_classifier
inputs:
  tokens: {shape: [batch, seq], dtype: int64}
nodes:
  - {name: embed, layer: Embedding, args: {num_embeddings: 50, embedding_dim: 16}}
  - {name: rnn, layer: GRU, args: {input_size: 16, hidden_size: 24, num_layers: 2, batch_first: true}}
  - {name: h_n, op: getitem, in: rnn, args: {index: 1}}
  - {name: top, op: getitem, in: h_n, args: {index: -1}}
  - {name: head, layer: Linear, args: {in_features: 24, out_features: 4}}
outputs: {logits: head, hidden: top}
"""

TIED_LM = """\
modelpack: 1
name: tied_lm
inputs:
  tokens: {shape: [batch, seq], dtype: int64}
nodes:
  - {name: embed, layer: Embedding, args: {num_embeddings: 40, embedding_dim: 12}}
  - {name: norm, layer: LayerNorm, args: {normalized_shape: 12}}
  - {name: decoder, layer: Linear, args: {in_features: 12, out_features: 40, bias: false}}
outputs: [decoder]
"""

UNET = """\
modelpack: 1
name: unet_tiny
inputs:
  image: {shape: [batch, 2, 16, 16]}
nodes:
  - {name: down.conv, layer: Conv2d, args: {in_channels: 2, out_channels: 4, kernel_size: 3, padding: 1}}
  - {name: down.act, op: relu}
  - {name: pool, layer: MaxPool2d, args: {kernel_size: 2}}
  - {name: mid.conv, layer: Conv2d, args: {in_channels: 4, out_channels: 8, kernel_size: 3, padding: 1}}
  - {name: mid.norm, layer: BatchNorm2d, args: {num_features: 8}}
  - {name: up, layer: ConvTranspose2d, args: {in_channels: 8, out_channels: 4, kernel_size: 2, stride: 2}}
  - {name: skip, op: cat, in: [up, down.act], args: {dim: 1}}
  - {name: out.conv, layer: Conv2d, args: {in_channels: 8, out_channels: 1, kernel_size: 1}}
outputs: [out.conv]
"""

ZOO = {"mlp": MLP, "lenet": LENET, "resnet": RESNET, "lstm": LSTM, "gru": GRU, "tied_lm": TIED_LM, "unet": UNET}


def example_inputs(name: str, batch: int = 2, seq: int = 7) -> tuple[torch.Tensor, ...]:
    """Random inputs matching the declared shapes of ``ZOO[name]`` (seeded, reproducible)."""
    g = torch.Generator().manual_seed(1234)
    if name in ("lstm", "gru", "tied_lm"):
        return (torch.randint(0, 40, (batch, seq), generator=g),)
    shapes = {"mlp": (batch, 20), "lenet": (batch, 1, 28, 28), "resnet": (batch, 3, 16, 16),
              "unet": (batch, 2, 16, 16)}
    return (torch.randn(*shapes[name], generator=g),)


def built(name: str, *, seed: int = 0, tie: bool | None = None) -> torch.nn.Module:
    """A zoo model with seeded weights; BatchNorm buffers made non-trivial; the LM's decoder tied."""
    torch.manual_seed(seed)
    model = build(ZOO[name])
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 1.5)
                mod.num_batches_tracked.fill_(7)
    if tie if tie is not None else name == "tied_lm":
        model.decoder.weight = model.embed.weight
    return model.eval()


def pack_model(path: Path | str, spec_text: str, module: torch.nn.Module, *,
               state: dict[str, Any] | None = None, metadata: dict[str, str] | None = None) -> Path:
    """Write ``module``'s state_dict (or ``state``) with ``spec_text`` as a model file."""
    tree_json, leaves = tree.encode(module.state_dict() if state is None else state)
    api.write_pack(path, tree_json, leaves, spec_text=spec_text, metadata=metadata)
    return Path(path)


def packed(tmp_path: Path, name: str, **kw: Any) -> tuple[Path, torch.nn.Module]:
    """Build zoo model ``name``, pack it under tmp_path, return (path, the module that wrote it)."""
    model = built(name, **kw)
    return pack_model(tmp_path / f"{name}.mpk", ZOO[name], model), model


class SelfAttention(torch.nn.Module):
    """``mha(x, x, x, need_weights=False)``: the call-site keyword picks MHA's kernel, so export must keep it."""

    def __init__(self) -> None:
        super().__init__()
        self.mha = torch.nn.MultiheadAttention(16, 4, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mha(x, x, x, need_weights=False)[0]
