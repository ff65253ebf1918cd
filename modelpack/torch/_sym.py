"""Size arithmetic the capture records as Python calls, spelled with the int-capable vocabulary ops.

``add``/``sub``/``mul``/``div``/``neg`` run on plain numbers as Python does, so a call
with no row of its own (``max(a, b)`` of sizes, ``math.ceil(h / s)``, ``a % b``)
becomes a few of those nodes; the result is the same number, so the rebuilt model
follows the size as the original does.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

import torch
from torch import fx

__all__ = ["COMPOSITES", "is_size_value"]

Step = Callable[..., str]  # step(op, inputs, **args) -> the new node's name

# larger than any size difference: d // _BEYOND is -1 when d < 0 and 0 otherwise (sizes are ints; a
# float operand, rare in size arithmetic, is picked exactly too while |a - b| < 2**62)
_BEYOND = 2 ** 62


def _modulo(step: Step, const: Callable[[Any], str], a: str, b: str) -> str:
    """a % b with Python's sign: a - b * (a // b)."""
    return step("sub", [a, step("mul", [b, step("div", [a, b], rounding_mode="floor")])])


def _pick(step: Step, const: Callable[[Any], str], a: str, b: str, larger: bool) -> str:
    """max or min of a and b as a * s + b * (1 - s), s in {0, 1}: exact, never a - (a - b)."""
    below = step("div", [step("sub", [a, b]), const(_BEYOND)], rounding_mode="floor")  # -1: a < b, else 0
    a_wins = step("add", [below, const(1)]) if larger else step("neg", [below])
    b_wins = step("neg", [below]) if larger else step("add", [below, const(1)])
    return step("add", [step("mul", [a, a_wins]), step("mul", [b, b_wins])])


def _maximum(step: Step, const: Callable[[Any], str], a: str, b: str) -> str:
    return _pick(step, const, a, b, larger=True)


def _minimum(step: Step, const: Callable[[Any], str], a: str, b: str) -> str:
    return _pick(step, const, a, b, larger=False)


def _floor(step: Step, const: Callable[[Any], str], x: str) -> str:
    """math.floor: x // 1 (a whole float), then a truncating division by 1 makes it an int."""
    whole = step("div", [x, const(1)], rounding_mode="floor")
    return step("div", [whole, const(1)], rounding_mode="trunc")


def _ceil(step: Step, const: Callable[[Any], str], x: str) -> str:
    """math.ceil: -floor(-x)."""
    return step("neg", [_floor(step, const, step("neg", [x]))])


COMPOSITES: dict[Any, Callable[..., str]] = {
    operator.mod: _modulo, torch.sym_max: _maximum, torch.sym_min: _minimum, math.floor: _floor,
    math.ceil: _ceil,
}


_SIZE_ARITHMETIC = frozenset({operator.add, operator.sub, operator.mul, operator.floordiv, operator.truediv,
                              operator.neg, operator.pow, *COMPOSITES})


def is_size_value(value: Any) -> bool:
    """On an fx trace (no example values): whether ``value`` is a number computed from sizes alone
    (``x.shape[-1] % 4``), so the composites above give Python's result, never a tensor's."""
    if not isinstance(value, fx.Node):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if value.op == "call_method" and value.target in ("size", "dim"):
        return True
    if value.op != "call_function":
        return False
    if value.target is getattr:
        return value.args[1] == "shape"
    if value.target is operator.getitem:
        return _is_size_sequence(value.args[0])
    return value.target in _SIZE_ARITHMETIC and all(is_size_value(a) for a in value.args)


def _is_size_sequence(value: Any) -> bool:
    return isinstance(value, fx.Node) and ((value.op == "call_method" and value.target == "size")
                                           or (value.op == "call_function" and value.target is getattr
                                               and value.args[1] == "shape"))
