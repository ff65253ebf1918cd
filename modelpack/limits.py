"""Named safety caps, checked before any allocation driven by a file's claims.

Every reader consults :func:`current` so that one hostile number in a file
(a member count, a shape, a spec size) cannot make us allocate or loop far
beyond what the file legitimately needs. To accept bigger legitimate inputs,
raise a cap for a block of code::

    with modelpack.limits.raised(max_tensors=1_000_000):
        modelpack.load("huge.mpk")

A writer applies the same caps with the same checks (``save`` refuses what
``load`` would refuse), so a file saved under raised caps loads under the same
raised caps, and a file saved under the defaults loads anywhere.

Two bounds need no cap because the format makes them structural (see SECURITY.md):
the bytes tensors declare never exceed the file (members tile the file, and each
tensor's byte length must equal its member's size minus the .npy header), and no
member is ever expanded (only STORED members are accepted, so there is no
decompression ratio to bound).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Iterator

from .errors import LimitError

__all__ = ["Limits", "current", "raised", "check"]


@dataclasses.dataclass(frozen=True)
class Limits:
    """The caps in force; each field's comment says why it exists."""

    # The manifest is parsed in memory as JSON: 64 MiB covers millions of tensors.
    max_manifest_bytes: int = 64 << 20
    # JSON objects and arrays in the manifest, counted (bytes.count) before it is parsed: each costs
    # ~70 bytes parsed, against 3 in the file, so a 63 MB manifest of `{},{},...` peaked at 1.7 GB RSS.
    # A real manifest holds about 3 per tensor (entry, shape, tree reference).
    max_manifest_containers: int = 4_000_000
    # A hand-written spec is a few KiB; a traced one rarely passes 1 MiB.
    max_spec_bytes: int = 8 << 20
    # Zip entries are parsed one by one from the central directory.
    max_members: int = 1_000_000
    # Tensors listed in one manifest.
    max_tensors: int = 1_000_000
    # Dimensions of one tensor (torch supports 64).
    max_dims: int = 64
    # Containers nested inside each other in a saved tree or a spec document.
    max_depth: int = 64
    # Characters in a tensor, member or node name.
    max_name_length: int = 512
    # Nodes in one spec (after block expansion).
    max_nodes: int = 100_000
    # YAML aliases: a small budget defeats "billion laughs" expansion.
    max_yaml_aliases: int = 0
    # Bytes a spec may declare in parameters before we build it (1 TiB).
    max_param_bytes: int = 1 << 40
    # Modules a spec implies (layers, their submodules, one namespace module per distinct dotted-name
    # prefix: `a.b.c` makes `a` and `a.b`), counted before any is built:
    # each costs about 2 KB and a few microseconds on the meta device. Large models hold thousands.
    max_modules: int = 1_000_000
    # Elements of any single saved scalar list/str in a tree (e.g. 10 M ints).
    max_tree_items: int = 10_000_000
    # Characters of all the dotted keys a tree flattens to (diff, load_weights): each key repeats its
    # parents' keys, so one long key above many items would multiply; a model's keys are ~100 B each.
    max_key_bytes: int = 256 << 20
    # Values in the args of all nodes after block expansion: a block parameter's literal counts once
    # per node that uses it, since each node's args are checked and built on their own.
    max_spec_values: int = 4_000_000
    # Elements one op of a rebuilt model may create from sizes in the spec (arange, full, expand,
    # repeat...), checked before it allocates: 16 G elements (64 GiB of float32).
    max_op_elements: int = 1 << 34


_CURRENT: contextvars.ContextVar[Limits] = contextvars.ContextVar("modelpack_limits", default=Limits())
_SAVING: contextvars.ContextVar[bool] = contextvars.ContextVar("modelpack_limits_saving", default=False)


def current() -> Limits:
    """The caps in force for this thread / task."""
    return _CURRENT.get()


@contextlib.contextmanager
def raised(**caps: int) -> Iterator[Limits]:
    """Temporarily replace some caps (by field name) for the enclosed block."""
    known = {f.name for f in dataclasses.fields(Limits)}
    unknown = sorted(set(caps) - known)
    if unknown:
        raise TypeError(f"unknown limit(s) {unknown}; known: {sorted(known)}")
    token = _CURRENT.set(dataclasses.replace(_CURRENT.get(), **caps))
    try:
        yield _CURRENT.get()
    finally:
        _CURRENT.reset(token)


@contextlib.contextmanager
def saving() -> Iterator[None]:
    """Checks in this block run for a writer: their errors say load would refuse the file."""
    token = _SAVING.set(True)
    try:
        yield
    finally:
        _SAVING.reset(token)


def check(name: str, value: int, *, where: str | None = None, what: str = "") -> None:
    """Raise LimitError if ``value`` exceeds the cap ``name``."""
    cap = getattr(current(), name)
    if value > cap:
        label = what or name.removeprefix("max_").replace("_", " ")
        if _SAVING.get():
            hint = (f"load would refuse the file, so it is not written; save less, or raise the limit around "
                    f"both the save and the load with modelpack.limits.raised({name}=...)")
        else:
            hint = f"if the file is trusted, raise it with modelpack.limits.raised({name}=...)"
        raise LimitError(f"{label} {value:,} exceeds the limit {name}={cap:,}; {hint}", where=where)
