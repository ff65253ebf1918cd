"""Shape arithmetic on plain Python values, bounded: ints stay in int64 and sequences stay short.

The ops ``add``/``sub``/``mul``/``div``/``pow``/``neg`` run on tensors and on
the ints of shape arithmetic alike (``x.size(0) * 2``). On tensors torch
bounds the work; on Python values nothing does: ``2 ** 10**9`` runs for
minutes, ``"ab" * 10**12`` allocates terabytes, and ``t = t + t`` doubles a
tuple per node. So before each operation on plain values we check what it
may produce: ints (and bools) in int64 range, finite floats, sequences
(``x.shape[:-1] + (n,)``) of at most ``MAX_ITEMS`` ints; anything else, or a
result out of range, is a SpecError naming the operation. Torch-free.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

from ..errors import SpecError

__all__ = ["MAX_ITEMS", "is_plain", "binary", "negate"]

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# Items of a tuple built by shape arithmetic (sizes, paddings): a few times the 64 dims torch allows.
MAX_ITEMS = 1024


def is_plain(value: Any) -> bool:
    """A Python value (not a tensor, proxy or symbolic int) that the bounded rules apply to."""
    return value is None or type(value) in (int, float, bool, str) or isinstance(value, (tuple, list))


def _kind(value: Any) -> str:
    return "a sequence" if isinstance(value, (tuple, list)) else type(value).__name__


def _check_number(value: Any, what: str) -> None:
    if type(value) in (int, bool):
        if not INT64_MIN <= value <= INT64_MAX:
            raise SpecError(f"{what}: {_brief(value)} is outside the int64 range of shape values")
    elif type(value) is float:
        if not math.isfinite(value):
            raise SpecError(f"{what}: {value} is not a finite number")
    elif isinstance(value, (tuple, list)):
        if len(value) > MAX_ITEMS:
            raise SpecError(f"{what}: a sequence of {len(value):,} items is longer than {MAX_ITEMS} (shape values)")
        for item in value:
            if type(item) in (int, bool):
                _check_number(item, what)
            elif is_plain(item):  # symbolic sizes (torch.SymInt, proxies) pass: torch bounds them
                raise SpecError(f"{what}: a shape sequence holds {_kind(item)}, not an int")
    else:
        raise SpecError(f"{what}: shape arithmetic takes ints, floats and int sequences, not {_kind(value)}")


def _brief(value: int) -> str:
    return str(value) if value.bit_length() < 200 else f"an integer of {value.bit_length():,} bits"


def binary(name: str, op: Callable[[Any, Any], Any], a: Any, b: Any) -> Any:
    """``op(a, b)`` for plain values, refused (SpecError) where it could leave int64 or grow without bound."""
    what = f"{name} on {_kind(a)} and {_kind(b)}"
    _check_number(a, what)
    _check_number(b, what)
    seq_a, seq_b = isinstance(a, (tuple, list)), isinstance(b, (tuple, list))
    if seq_a or seq_b:
        return _sequence(name, op, a, b, what)
    if name == "pow" and type(b) in (int, bool) and type(a) in (int, bool) and b > 0:
        if abs(a) > 1 and (abs(a).bit_length() - 1) * b > 64:  # a ** b >= 2**((bits-1)*b): surely too big
            raise SpecError(f"{what}: {a} ** {b} is outside the int64 range of shape values")
    try:
        result = op(a, b)
    except (ArithmeticError, ValueError) as e:  # division by zero, float overflow, complex results
        raise SpecError(f"{what}: {type(e).__name__}: {e}") from e
    if type(result) not in (int, bool, float):
        raise SpecError(f"{what}: the result is {_kind(result)}, not a number")
    _check_number(result, what)
    return result


def _sequence(name: str, op: Callable[[Any, Any], Any], a: Any, b: Any, what: str) -> Any:
    """``shape[:-1] + (n,)`` and ``(1,) * k``: concatenation and repetition, length bounded before building."""
    if name == "add" and isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        length = len(a) + len(b)
    elif name == "mul" and type(b) in (int, bool) and isinstance(a, (tuple, list)):
        length = len(a) * max(int(b), 0)
    elif name == "mul" and type(a) in (int, bool) and isinstance(b, (tuple, list)):
        length = len(b) * max(int(a), 0)
    else:
        raise SpecError(f"{what}: not an operation of shape arithmetic")
    if length > MAX_ITEMS:
        raise SpecError(f"{what}: the result would hold {length:,} items, more than {MAX_ITEMS} (shape values)")
    try:
        return op(a, b)
    except TypeError as e:  # a list plus a tuple
        raise SpecError(f"{what}: {e}") from e


def negate(a: Any) -> Any:
    """``-a`` for a plain number (``-(-2**63)`` leaves int64)."""
    _check_number(a, "neg")
    if isinstance(a, (tuple, list)):
        raise SpecError("neg on a sequence: not an operation of shape arithmetic")
    result = operator.neg(a)
    _check_number(result, "neg")
    return result
