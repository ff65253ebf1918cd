"""Generated specs shaped like ResNet-50, ViT and Llama, for `modelpack show` tests and benchmarks.

Written without torchvision or transformers: the node names follow theirs
(``layer1.0.conv1``, ``encoder.layers.encoder_layer_0.ln_1``,
``model.layers.0.self_attn.q_proj``) so the module hierarchy is the real one.
ResNet uses ``blocks``; ViT and Llama are flat lists of layer and op nodes (the
shape torch.export produces), with RMSNorm and attention spelt out as ops.
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["resnet50", "vit", "llama", "to_yaml"]


class _NoAliases(yaml.SafeDumper):
    """Specs refuse anchors and aliases; write a value shared by two nodes out twice."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def to_yaml(spec: dict[str, Any]) -> str:
    """Block-style YAML with one flow mapping per node: one line per node, so file:line is exact."""
    return yaml.dump(spec, Dumper=_NoAliases, sort_keys=False, default_flow_style=None, width=10_000)


# --------------------------------------------------------------------------- ResNet-50


def _conv(name: str, cin: Any, cout: Any, k: int, stride: Any = 1, **extra: Any) -> dict[str, Any]:
    args = {"in_channels": cin, "out_channels": cout, "kernel_size": k, "stride": stride, "bias": False, **extra}
    return {"name": name, "layer": "Conv2d", "args": args}


def _bn(name: str, c: Any) -> dict[str, Any]:
    return {"name": name, "layer": "BatchNorm2d", "args": {"num_features": c}}


def _bottleneck(down: bool) -> dict[str, Any]:
    p = {"param": "in_channels"}, {"param": "width"}, {"param": "out_channels"}, {"param": "stride"}
    cin, width, cout, stride = p
    nodes = [_conv("conv1", cin, width, 1), _bn("bn1", width), {"name": "relu1", "op": "relu"},
             _conv("conv2", width, width, 3, stride, padding=1), _bn("bn2", width), {"name": "relu2", "op": "relu"},
             _conv("conv3", width, cout, 1), _bn("bn3", cout)]
    shortcut = "x"
    if down:
        nodes += [{**_conv("downsample.0", cin, cout, 1, stride), "in": "x"}, _bn("downsample.1", cout)]
        shortcut = "downsample.1"
    nodes += [{"name": "add", "op": "add", "in": ["bn3", shortcut]}, {"name": "relu3", "op": "relu"}]
    return {"params": ["in_channels", "width", "out_channels", "stride"], "inputs": ["x"], "nodes": nodes,
            "outputs": ["relu3"]}


def resnet50(image: int = 224, classes: int = 1000) -> dict[str, Any]:
    """torchvision's ResNet-50 layout: 4 stages of 3, 4, 6, 3 bottleneck blocks."""
    nodes: list[dict[str, Any]] = [
        _conv("conv1", 3, 64, 7, 2, padding=3), _bn("bn1", 64), {"name": "relu", "op": "relu"},
        {"name": "maxpool", "layer": "MaxPool2d", "args": {"kernel_size": 3, "stride": 2, "padding": 1}}]
    cin = 64
    for stage, (count, width) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512)), start=1):
        for i in range(count):
            args = {"in_channels": cin, "width": width, "out_channels": width * 4,
                    "stride": 2 if (i == 0 and stage > 1) else 1}
            nodes.append({"name": f"layer{stage}.{i}", "block": "down" if i == 0 else "basic", "args": args})
            cin = width * 4
    nodes += [{"name": "avgpool", "layer": "AdaptiveAvgPool2d", "args": {"output_size": 1}},
              {"name": "flatten", "op": "flatten", "args": {"start_dim": 1}},
              {"name": "fc", "layer": "Linear", "args": {"in_features": 2048, "out_features": classes}}]
    return {"modelpack": 1, "name": "resnet50", "inputs": {"x": {"shape": ["batch", 3, image, image]}},
            "blocks": {"basic": _bottleneck(False), "down": _bottleneck(True)}, "nodes": nodes,
            "outputs": ["fc"]}


# --------------------------------------------------------------------------- ViT


def _vit_layer(p: str, x: str, dim: int, heads: int, mlp: int) -> list[dict[str, Any]]:
    ln = {"normalized_shape": dim, "eps": 1e-6}
    return [
        {"name": f"{p}.ln_1", "layer": "LayerNorm", "in": x, "args": ln},
        {"name": f"{p}.self_attention", "layer": "MultiheadAttention", "in": [f"{p}.ln_1"] * 3,
         "args": {"embed_dim": dim, "num_heads": heads, "batch_first": True}},
        {"name": f"{p}.attn_out", "op": "getitem", "args": {"index": 0}},
        {"name": f"{p}.add_1", "op": "add", "in": [f"{p}.attn_out", x]},
        {"name": f"{p}.ln_2", "layer": "LayerNorm", "args": ln},
        {"name": f"{p}.mlp.0", "layer": "Linear", "args": {"in_features": dim, "out_features": mlp}},
        {"name": f"{p}.mlp.1", "layer": "GELU"},
        {"name": f"{p}.mlp.3", "layer": "Linear", "args": {"in_features": mlp, "out_features": dim}},
        {"name": f"{p}.add_2", "op": "add", "in": [f"{p}.mlp.3", f"{p}.add_1"]},
    ]


def vit(layers: int = 32, dim: int = 1280, heads: int = 16, mlp: int = 5120, patch: int = 14,
        image: int = 224, classes: int = 1000) -> dict[str, Any]:
    """torchvision's ViT layout (defaults: ViT-H/14), with a class token and learned positions."""
    tokens = (image // patch) ** 2 + 1
    nodes: list[dict[str, Any]] = [
        {"name": "conv_proj", "layer": "Conv2d",
         "args": {"in_channels": 3, "out_channels": dim, "kernel_size": patch, "stride": patch}},
        {"name": "patches", "op": "flatten", "args": {"start_dim": 2}},
        {"name": "tokens", "op": "transpose", "args": {"dim0": 1, "dim1": 2}},
        {"name": "batch_size", "op": "size", "in": "x", "args": {"dim": 0}},
        {"name": "class_token", "layer": "Parameter", "in": [], "args": {"shape": [1, 1, dim]}},
        {"name": "class_tokens", "op": "expand", "in": "class_token",
         "args": {"size": [{"ref": "batch_size"}, -1, -1]}},
        {"name": "sequence", "op": "cat", "in": ["class_tokens", "tokens"], "args": {"dim": 1}},
        {"name": "encoder.pos_embedding", "layer": "Parameter", "in": [], "args": {"shape": [1, tokens, dim]}},
        {"name": "encoder.add_pos", "op": "add", "in": ["sequence", "encoder.pos_embedding"]},
    ]
    x = "encoder.add_pos"
    for i in range(layers):
        nodes += _vit_layer(f"encoder.layers.encoder_layer_{i}", x, dim, heads, mlp)
        x = nodes[-1]["name"]
    nodes += [{"name": "encoder.ln", "layer": "LayerNorm", "in": x, "args": {"normalized_shape": dim, "eps": 1e-6}},
              {"name": "cls", "op": "index", "args": {"index": [":", 0]}},
              {"name": "heads.head", "layer": "Linear", "args": {"in_features": dim, "out_features": classes}}]
    return {"modelpack": 1, "name": f"vit_{layers}x{dim}", "inputs": {"x": {"shape": ["batch", 3, image, image]}},
            "nodes": nodes, "outputs": ["heads.head"]}


# --------------------------------------------------------------------------- Llama


def _rms_norm(p: str, x: str, dim: int) -> list[dict[str, Any]]:
    """RMSNorm as ops: x * rsqrt(mean(x^2) + eps) * weight."""
    return [
        {"name": f"{p}.two", "op": "scalar", "in": [], "args": {"value": 2.0}},
        {"name": f"{p}.square", "op": "pow", "in": [x, f"{p}.two"]},
        {"name": f"{p}.mean", "op": "mean", "args": {"dim": -1, "keepdim": True}},
        {"name": f"{p}.eps", "op": "scalar", "in": [], "args": {"value": 1e-6}},
        {"name": f"{p}.add_eps", "op": "add", "in": [f"{p}.mean", f"{p}.eps"]},
        {"name": f"{p}.rsqrt", "op": "rsqrt"},
        {"name": f"{p}.normed", "op": "mul", "in": [x, f"{p}.rsqrt"]},
        {"name": f"{p}.weight", "layer": "Parameter", "in": [], "args": {"shape": [dim]}},
        {"name": f"{p}.out", "op": "mul", "in": [f"{p}.normed", f"{p}.weight"]},
    ]


def _heads(p: str, src: str, heads: int, head_dim: int) -> list[dict[str, Any]]:
    return [{"name": f"{p}.split", "layer": "Unflatten", "in": src,
             "args": {"dim": -1, "unflattened_size": [heads, head_dim]}},
            {"name": f"{p}.heads", "op": "transpose", "args": {"dim0": 1, "dim1": 2}}]


def _llama_attention(p: str, x: str, dim: int, heads: int) -> list[dict[str, Any]]:
    hd = dim // heads
    proj = {"in_features": dim, "out_features": dim, "bias": False}
    nodes: list[dict[str, Any]] = []
    for n in "qkv":
        nodes += [{"name": f"{p}.{n}_proj", "layer": "Linear", "in": x, "args": proj}]
        nodes += _heads(f"{p}.{n}", f"{p}.{n}_proj", heads, hd)
    return nodes + [
        {"name": f"{p}.k_t", "op": "transpose", "in": f"{p}.k.heads", "args": {"dim0": -2, "dim1": -1}},
        {"name": f"{p}.scores", "op": "matmul", "in": [f"{p}.q.heads", f"{p}.k_t"]},
        {"name": f"{p}.scale", "op": "scalar", "in": [], "args": {"value": hd ** -0.5}},
        {"name": f"{p}.scaled", "op": "mul", "in": [f"{p}.scores", f"{p}.scale"]},
        {"name": f"{p}.probs", "op": "softmax", "args": {"dim": -1}},
        {"name": f"{p}.context", "op": "matmul", "in": [f"{p}.probs", f"{p}.v.heads"]},
        {"name": f"{p}.merge", "op": "transpose", "args": {"dim0": 1, "dim1": 2}},
        {"name": f"{p}.concat", "op": "flatten", "args": {"start_dim": 2}},
        {"name": f"{p}.o_proj", "layer": "Linear", "args": proj},
    ]


def _llama_layer(p: str, x: str, dim: int, heads: int, ffn: int) -> list[dict[str, Any]]:
    nodes = _rms_norm(f"{p}.input_layernorm", x, dim)
    nodes += _llama_attention(f"{p}.self_attn", nodes[-1]["name"], dim, heads)
    nodes += [{"name": f"{p}.add_attn", "op": "add", "in": [f"{p}.self_attn.o_proj", x]}]
    nodes += _rms_norm(f"{p}.post_attention_layernorm", f"{p}.add_attn", dim)
    norm = nodes[-1]["name"]
    up = {"in_features": dim, "out_features": ffn, "bias": False}
    return nodes + [
        {"name": f"{p}.mlp.gate_proj", "layer": "Linear", "in": norm, "args": up},
        {"name": f"{p}.mlp.act", "op": "silu"},
        {"name": f"{p}.mlp.up_proj", "layer": "Linear", "in": norm, "args": up},
        {"name": f"{p}.mlp.gated", "op": "mul", "in": [f"{p}.mlp.act", f"{p}.mlp.up_proj"]},
        {"name": f"{p}.mlp.down_proj", "layer": "Linear",
         "args": {"in_features": ffn, "out_features": dim, "bias": False}},
        {"name": f"{p}.add_mlp", "op": "add", "in": [f"{p}.mlp.down_proj", f"{p}.add_attn"]},
    ]


def llama(layers: int = 32, dim: int = 4096, heads: int = 32, ffn: int = 11008,
          vocab: int = 32000) -> dict[str, Any]:
    """A Llama-shaped decoder (defaults: the 7B shapes), HF module names, no rotary embedding."""
    nodes: list[dict[str, Any]] = [{"name": "model.embed_tokens", "layer": "Embedding",
                                    "args": {"num_embeddings": vocab, "embedding_dim": dim}}]
    x = "model.embed_tokens"
    for i in range(layers):
        nodes += _llama_layer(f"model.layers.{i}", x, dim, heads, ffn)
        x = nodes[-1]["name"]
    nodes += _rms_norm("model.norm", x, dim)
    nodes += [{"name": "lm_head", "layer": "Linear", "args": {"in_features": dim, "out_features": vocab,
                                                              "bias": False}}]
    return {"modelpack": 1, "name": f"llama_{layers}x{dim}",
            "inputs": {"tokens": {"shape": ["batch", "seq"], "dtype": "int64"}}, "nodes": nodes,
            "outputs": ["lm_head"]}
