"""Output shapes by rule, without torch: the table ``modelpack inspect`` shows for common models.

Running torch's meta kernels to learn shapes costs seconds of imports (their
checks import sympy, several decompositions import torch._dynamo). For the
layers and ops of a CNN or an MLP the output shape is a short formula, written
here from torch's documentation; ``tests/test_shape_rules.py`` holds every rule
to torch's own result. A spec using anything else (or a rule's precondition
failing, such as a channel count that does not match) gives None, and the
caller falls back to ``modelpack.torch.shapes``.

Symbolic dims (``batch``) get concrete sizes: symbol i is ``32 * p_i`` in the
first run and ``32 * (p_i + q_i)`` in the second, the q_i distinct primes above
32, so a dim that moved with a symbol is written in its terms (``height/2``,
``seq-4``) and cannot be mistaken for another; ``?`` when it fits none.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from typing import Any

from ..vocab import LAYERS, OPS, REQUIRED

__all__ = ["rule_shapes", "symbols", "sizes", "dim_text", "add_block_nodes"]

_BASE = (11, 13, 17, 19, 23, 29, 31)
_STEP = (37, 41, 43, 47, 53, 59, 61)
_SCALE = 32

Shape = tuple[int, ...]


class _NoRule(Exception):
    """This node has no rule here (or its precondition fails): let torch say."""


# --------------------------------------------------------------------------- symbols


def symbols(spec: Mapping[str, Any]) -> list[str]:
    """The symbolic dims of the declared inputs, in order of appearance."""
    names: dict[str, None] = {}
    for decl in spec["inputs"].values():
        names.update((d, None) for d in decl["shape"] if isinstance(d, str))
    return list(names)


class _Run(dict):
    """Symbol -> size in one run; the first run also keeps the reverse index dim_text needs."""

    index: tuple[dict[tuple[int, int], str], dict[int, tuple[int, str]]] | None = None


def sizes(names: Sequence[str], run: int) -> dict[str, int]:
    """Concrete sizes for the symbols in run 0 or 1 (see the module doc)."""
    base, step = list(_BASE), list(_STEP)
    if len(names) > len(step):  # more symbols than the table: continue both with the next primes
        more = _primes_after(max(base[-1], step[-1]), 2 * (len(names) - len(step)))
        base += more[0::2]
        step += more[1::2]
    return _Run((s, _SCALE * (b + run * q)) for s, b, q in zip(names, base, step))


def _primes_after(n: int, count: int) -> list[int]:
    """The ``count`` primes above ``n``, by a sieve (trial division per prime would dominate)."""
    limit = max(2 * n, 64)
    while True:
        sieve = bytearray([1]) * (limit + 1)
        sieve[0:2] = b"\0\0"
        for k in range(2, math.isqrt(limit) + 1):
            if sieve[k]:
                sieve[k * k::k] = bytes(len(range(k * k, limit + 1, k)))
        found = [p for p in range(n + 1, limit + 1) if sieve[p]]
        if len(found) >= count:
            return found[:count]
        limit *= 2


def _index(runs: Sequence[Mapping[str, int]]) -> tuple[dict[tuple[int, int], str], dict[int, tuple[int, str]]]:
    """(x, y) -> the symbol sized so, and q -> (order, symbol) for the symbol whose run 1 adds 32q."""
    first = runs[0]
    if isinstance(first, _Run) and first.index is not None:
        return first.index
    pairs: dict[tuple[int, int], str] = {}
    steps: dict[int, tuple[int, str]] = {}
    for i, (symbol, a) in enumerate(first.items()):
        pairs.setdefault((a, runs[1][symbol]), symbol)
        delta = runs[1][symbol] - a
        if delta > 0 and delta % _SCALE == 0:
            steps.setdefault(delta // _SCALE, (i, symbol))
    if isinstance(first, _Run):
        first.index = (pairs, steps)
    return pairs, steps


# k = num/den with den dividing 32 and num <= 32, in lowest terms: the slopes dim_text can write
# (``height/2``, ``4*c``)
_SLOPES = tuple((num, den) for den in (1, 2, 4, 8, 16, 32) for num in range(1, _SCALE + 1)
                if math.gcd(num, den) == 1)


def dim_text(x: int, y: int, runs: Sequence[Mapping[str, int]]) -> str:
    """A dim seen as ``x`` in run 0 and ``y`` in run 1, in terms of the symbol it follows.

    A fixed number of lookups per dim, however many symbols there are: y - x = k * 32q for the
    symbol whose second run adds 32q, so each allowed slope k names at most one q.
    """
    if x == y:
        return str(x)
    pairs, steps = _index(runs)
    if (x, y) in pairs:
        return pairs[(x, y)]
    best: tuple[int, str, int, int] | None = None
    for num, den in _SLOPES if y > x else ():
        q, rest = divmod((y - x) * den, _SCALE * num)  # q = (y - x) / (32 k)
        found = steps.get(q) if rest == 0 else None
        if found is None or (best is not None and found[0] > best[0]):
            continue
        if (num * runs[0][found[1]]) % den == 0:  # c = x - k * a is an integer
            best = (found[0], found[1], num, den)
    if best is None:
        return "?"
    _, symbol, num, den = best
    return _expr(symbol, Fraction(num, den), x - num * runs[0][symbol] // den)


def _expr(symbol: str, k: Fraction, c: int) -> str:
    text = symbol if k == 1 else f"{symbol}/{k.denominator}" if k.numerator == 1 else f"{k}*{symbol}"
    return text if c == 0 else f"{text}{c:+d}"


def add_block_nodes(blocks: Mapping[str, Any], nodes: list[dict[str, Any]], prefix: str,
                    shapes: dict[str, str]) -> None:
    """Give each block node (``layer1.0``) the shape of its single output, innermost blocks first."""
    for node in nodes:
        if "block" not in node:
            continue
        name, block = prefix + node["name"], blocks[node["block"]]
        add_block_nodes(blocks, block["nodes"], name + ".", shapes)
        if len(block["outputs"]) == 1 and f"{name}.{block['outputs'][0]}" in shapes:
            shapes[name] = shapes[f"{name}.{block['outputs'][0]}"]


# --------------------------------------------------------------------------- rules


def _args(node: Mapping[str, Any], kind: str) -> dict[str, Any]:
    entry = (LAYERS if kind == "layer" else OPS)[node[kind]]
    args = {a.name: a.default for a in entry.args if a.default is not REQUIRED}
    args.update(node.get("args") or {})
    if any(isinstance(v, dict) for v in args.values()):  # {ref: node}: a value known only when it runs
        raise _NoRule
    return args


def _per_dim(value: Any, n: int) -> list[int]:
    values = list(value) if isinstance(value, (list, tuple)) else [value] * n
    if len(values) != n or not all(isinstance(v, int) for v in values):
        raise _NoRule
    return values


def _need(cond: bool) -> None:
    if not cond:
        raise _NoRule


def _same(x: Shape, args: Mapping[str, Any]) -> Shape:
    return x


def _features(attr: str, ranks: tuple[int, ...]) -> Callable[[Shape, Mapping[str, Any]], Shape]:
    """Same shape, for a layer that wants ``args[attr]`` channels at dim 1 of an input of one of ``ranks``."""
    def rule(x: Shape, args: Mapping[str, Any]) -> Shape:
        _need(len(x) in ranks and x[1] == args[attr])
        return x

    return rule


def _conv(n: int) -> Callable[[Shape, Mapping[str, Any]], Shape]:
    def rule(x: Shape, args: Mapping[str, Any]) -> Shape:
        _need(len(x) in (n + 1, n + 2) and x[-n - 1] == args["in_channels"] and args["padding_mode"] == "zeros")
        k, s, d = (_per_dim(args[a], n) for a in ("kernel_size", "stride", "dilation"))
        if args["padding"] == "same":
            return x[:-n - 1] + (args["out_channels"], *x[-n:])
        p = [0] * n if args["padding"] == "valid" else _per_dim(args["padding"], n)
        out = [(size + 2 * p[i] - d[i] * (k[i] - 1) - 1) // s[i] + 1 for i, size in enumerate(x[-n:])]
        _need(all(o > 0 for o in out))
        return x[:-n - 1] + (args["out_channels"], *out)

    return rule


def _pool(n: int, dilated: bool) -> Callable[[Shape, Mapping[str, Any]], Shape]:
    def rule(x: Shape, args: Mapping[str, Any]) -> Shape:
        _need(len(x) in (n + 1, n + 2))
        k = _per_dim(args["kernel_size"], n)
        s = k if args["stride"] is None or args["stride"] == [] else _per_dim(args["stride"], n)
        p = _per_dim(args["padding"], n)
        d = _per_dim(args["dilation"], n) if dilated else [1] * n
        _need(all(2 * p[i] <= k[i] for i in range(n)))
        out = [_pooled(size, k[i], s[i], p[i], d[i], bool(args["ceil_mode"])) for i, size in enumerate(x[-n:])]
        _need(all(o > 0 for o in out))
        return x[:-n] + tuple(out)

    return rule


def _pooled(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    span = size + 2 * p - d * (k - 1) - 1
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= size + p:  # the last window must start inside the input or left padding
        out -= 1
    return out


def _adaptive(n: int) -> Callable[[Shape, Mapping[str, Any]], Shape]:
    def rule(x: Shape, args: Mapping[str, Any]) -> Shape:
        _need(len(x) in (n + 1, n + 2))
        size = args["output_size"]
        wanted = list(size) if isinstance(size, (list, tuple)) else [size] * n
        _need(len(wanted) == n and all(w is None or (isinstance(w, int) and w > 0) for w in wanted))
        return x[:-n] + tuple(x[-n + i] if w is None else w for i, w in enumerate(wanted))

    return rule


def _linear(x: Shape, args: Mapping[str, Any]) -> Shape:
    _need(len(x) >= 1 and x[-1] == args["in_features"])
    return x[:-1] + (args["out_features"],)


def _flatten(x: Shape, args: Mapping[str, Any]) -> Shape:
    if not x:
        return (1,)
    start, end = (d + len(x) if d < 0 else d for d in (args["start_dim"], args["end_dim"]))
    _need(0 <= start <= end < len(x))
    return x[:start] + (math.prod(x[start:end + 1]),) + x[end + 1:]


def _broadcast(a: Shape, b: Shape) -> Shape:
    out = []
    for i in range(1, max(len(a), len(b)) + 1):
        x, y = (a[-i] if i <= len(a) else 1), (b[-i] if i <= len(b) else 1)
        _need(x == y or 1 in (x, y))
        out.append(y if x == 1 else x)
    return tuple(reversed(out))


_SAME = ("Identity", "Dropout", "Dropout2d", "ReLU", "ReLU6", "LeakyReLU", "ELU",
         "GELU", "SiLU", "Mish", "Hardswish", "Hardsigmoid", "Sigmoid", "Tanh",
         "relu", "relu6", "leaky_relu", "elu", "gelu", "silu", "mish", "hardswish", "hardsigmoid", "sigmoid", "tanh",
         "neg", "exp", "abs", "sqrt", "rsqrt", "dropout")
_RULES: dict[str, Callable[[Shape, Mapping[str, Any]], Shape]] = {
    **{name: _same for name in _SAME},
    "BatchNorm1d": _features("num_features", (2, 3)), "BatchNorm2d": _features("num_features", (4,)),
    "Conv1d": _conv(1), "Conv2d": _conv(2), "Conv3d": _conv(3),
    "MaxPool1d": _pool(1, True), "MaxPool2d": _pool(2, True), "AvgPool1d": _pool(1, False),
    "AvgPool2d": _pool(2, False),
    "AdaptiveAvgPool1d": _adaptive(1), "AdaptiveAvgPool2d": _adaptive(2), "AdaptiveMaxPool1d": _adaptive(1),
    "AdaptiveMaxPool2d": _adaptive(2), "adaptive_avg_pool2d": _adaptive(2), "adaptive_max_pool2d": _adaptive(2),
    "Linear": _linear, "Flatten": _flatten, "flatten": _flatten,
}
_BROADCAST = ("add", "sub", "mul")
_FLOATING = ("float16", "bfloat16", "float32", "float64")
_MAX_NUMEL = 2**63


def _node_shape(node: Mapping[str, Any], env: Mapping[str, Shape]) -> Shape:
    kind = "layer" if "layer" in node else "op"
    name = node[kind]
    inputs = [env[ref] for ref in node["in"]]
    if name in _BROADCAST and len(inputs) == 2 and not node.get("args"):
        return _broadcast(*inputs)
    rule = _RULES.get(name)
    if rule is None or len(inputs) != 1:
        raise _NoRule
    return rule(inputs[0], _args(node, kind))


def _run(spec: Mapping[str, Any], concrete: Mapping[str, int]) -> dict[str, Shape]:
    env: dict[str, Shape] = {name: tuple(concrete[d] if isinstance(d, str) else d for d in decl["shape"])
                             for name, decl in spec["inputs"].items()}
    for node in spec["nodes"]:
        env[node["name"]] = _node_shape(node, env)
    _need(all(math.prod(shape) < _MAX_NUMEL for shape in env.values()))  # else torch cannot even describe it
    return env


def rule_shapes(data: Mapping[str, Any], expanded: Mapping[str, Any]) -> dict[str, str] | None:
    """node name -> output shape (``[batch, 64, height/2, width/2]``) of a validated spec, or None.

    ``data`` is the validated spec (its block nodes get their block's output
    shape), ``expanded`` the same spec with blocks expanded. None when any node
    lacks a rule here: then only torch can say.
    """
    if not all(decl.get("dtype", "float32") in _FLOATING for decl in expanded["inputs"].values()):
        return None  # the rules know shapes, not which dtypes each kernel takes
    names = symbols(expanded)
    runs = [sizes(names, r) for r in (0, 1)]
    try:
        envs = [_run(expanded, run) for run in runs]
    except _NoRule:
        return None
    shapes = {n["name"]: "[" + ", ".join(dim_text(x, y, runs) for x, y in zip(envs[0][n["name"]],
                                                                              envs[1][n["name"]])) + "]"
              for n in expanded["nodes"]}
    add_block_nodes(data.get("blocks") or {}, data["nodes"], "", shapes)
    return shapes
