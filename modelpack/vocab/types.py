"""The shapes of vocabulary entries: arguments, layers and ops (no torch here).

A vocabulary entry is pure data. The JSON Schema, the validator, the torch
builder and the exporter all read these records, so they cannot disagree.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

__all__ = ["REQUIRED", "ARG_TYPES", "Arg", "LayerDef", "OpDef", "freeze_table"]


class _Required:
    """Sentinel: the argument has no default and must be given."""

    _instance: "_Required | None" = None

    def __new__(cls) -> "_Required":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()

# The closed set of argument types. Each maps to one JSON Schema fragment
# (spec/schema.py), which the validator (spec/validate.py) checks with.
ARG_TYPES = frozenset(
    {
        "int",  # a true integer (not 2.0, not true)
        "float",  # a number; .inf/-.inf/.nan too (a bounded argument refuses NaN)
        "bool",
        "str",  # with `choices` when the set is closed
        "ints",  # an int or a list of ints (kernel_size=3 or [3, 3]); `length` bounds the list
        "int_list",  # a list of ints (shape, dims)
        "floats",  # a number or a list of numbers
        "dtype",  # one of modelpack's dtype names
        "size",  # torch's SymInt/SymInt[]: an int or {ref: node} (a size computed in the graph), or a list
        #          of those (null items too: adaptive pooling keeps a dim); never a float, so never .inf
        "value",  # any literal (int, float, bool, str, null, list) or {ref: node} reference
    }
)


@dataclasses.dataclass(frozen=True)
class Arg:
    """One keyword argument of a layer or op.

    ``minimum``/``maximum`` bound every number in the value (each element of an
    "ints"/"floats"/"int_list" list); ``choices`` closes a "str" argument.
    """

    name: str
    type: str
    default: Any = REQUIRED
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] | None = None
    nullable: bool = False
    length: int | None = None  # for "ints"/"floats"/"int_list" lists: exact length when set
    doc: str = ""
    # strings accepted in place of the typed value (Conv padding "same"/"valid")
    keywords: tuple[str, ...] = ()
    # a layer's forward keyword (MultiheadAttention need_weights), passed at each call, not to the constructor
    call: bool = False

    def __post_init__(self) -> None:
        if self.type not in ARG_TYPES:
            raise ValueError(f"argument {self.name!r}: unknown type {self.type!r}; known: {sorted(ARG_TYPES)}")

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


@dataclasses.dataclass(frozen=True)
class _Entry:
    name: str
    since: int
    args: tuple[Arg, ...] = ()
    # number of tensor inputs (min, max); max None = any number
    inputs: tuple[int, int | None] = (1, 1)
    # number of values produced; > 1 means a tuple to be taken apart with getitem;
    # None means a tuple whose length depends on the arguments (chunk)
    outputs: int | None = 1
    doc: str = ""
    # torch constructor/function arguments deliberately not exposed: a spec cannot set
    # them, so an exporter must refuse a module whose value differs from torch's default
    omitted: tuple[str, ...] = ()
    # the interpreter passes training=<the module's mode> (dropout-like ops; never read from the file)
    training: bool = False
    # "torch": bound to the torch callable of the same name; "modelpack": implemented in
    # modelpack.torch.ops (library helpers, shape values, the state-holding Parameter/Buffer rows);
    # "aten": the ATen overload ``torch.ops.aten.<op>.<overload>`` the row was generated from (vocab/aten.py)
    impl: str = "torch"

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for arg in self.args:
            if arg.name in seen:
                raise ValueError(f"{self.name}: argument {arg.name!r} defined twice")
            seen.add(arg.name)

    def arg(self, name: str) -> Arg | None:
        for a in self.args:
            if a.name == name:
                return a
        return None


@dataclasses.dataclass(frozen=True)
class LayerDef(_Entry):
    """A module that owns parameters/buffers; its node name is the state_dict prefix."""


@dataclasses.dataclass(frozen=True)
class OpDef(_Entry):
    """A stateless function of its inputs."""


def freeze_table(entries: Iterable[_Entry]) -> Mapping[str, Any]:
    """Build a read-only name -> entry mapping, refusing duplicate names."""
    table: dict[str, _Entry] = {}
    for entry in entries:
        if entry.name in table:
            raise ValueError(f"vocabulary entry {entry.name!r} defined twice")
        table[entry.name] = entry
    return MappingProxyType(table)
