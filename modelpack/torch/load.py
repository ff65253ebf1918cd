"""A .mpk -> a ready ``nn.Module`` (``load_model``), or some of its tensors into yours (``load_weights``).

``load_model`` builds the spec on the meta device (nothing allocated), checks
every parameter and buffer the spec implies against the manifest (shape and
dtype, nothing missing, nothing extra) before any tensor is touched, then hands
the module the file's memory-mapped tensors themselves: no second copy of the
weights. Two state_dict keys stored as one tensor (tied weights) become one
``nn.Parameter``, so an optimizer updates it once.

dtype policy: nothing is ever cast. Each module takes the floating dtype its
tensors have in the file when the floating tensors it owns directly all agree (a
float16 file gives a float16 model; a file with float32 norms and bfloat16
linears keeps both), because a layer computes in one dtype. Floating tensors of
one module that disagree, and integer/bool tensors whose dtype differs from what
torch builds (``num_batches_tracked`` is int64), are mismatches.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import api, tree
from ..errors import WeightsMismatchError
from ..spec.cost import check_cost, check_file_holds
from .build import SpecModule, build_validated, follow_key_order, held_tensors, prepare, registered, subgraph
from .placement import finish, place
from .tensors import dtype_row

__all__ = ["load_model", "load_weights", "cross_check", "state_refs", "LoadReport"]


# --------------------------------------------------------------------------- the file's state_dict


def state_refs(pack: api.Pack, *, flatten: bool = False) -> dict[str, str]:
    """state_dict key -> tensor name, read from the manifest tree without touching tensor data.

    A model file's tree is a flat dict of keys to tensors. With ``flatten=True``
    nested dicts and lists are joined with dots (``{"model": {"fc.weight": ...}}``
    gives ``model.fc.weight``) and non-tensor values are skipped, so any tensor
    dict a checkpoint holds can be a source for :func:`load_weights`.
    """
    if flatten:
        return tree.flat_refs(pack.manifest["tree"])
    decoded = tree.decode(pack.manifest["tree"], tree.TensorRef)
    if not isinstance(decoded, dict) or not all(isinstance(v, tree.TensorRef) for v in decoded.values()):
        raise WeightsMismatchError("the file's tensors are not a flat state_dict (key -> tensor)",
                                   source=pack.path)
    return {str(k): str(v) for k, v in decoded.items()}


def _describe(shape: Iterable[int], dtype: str) -> str:
    return f"[{', '.join(str(d) for d in shape)}] {dtype}"


def _dtype_name(dtype: torch.dtype) -> str:
    return dtype_row(dtype).name


# --------------------------------------------------------------------------- cross-check


@dataclasses.dataclass(frozen=True)
class _Want:
    """What the spec implies for one state_dict key."""

    shape: tuple[int, ...]
    dtype: str
    floating: bool


def _wanted(module: nn.Module) -> dict[str, _Want]:
    state = held_tensors(module)
    return {k: _Want(tuple(t.shape), _dtype_name(t.dtype), t.is_floating_point()) for k, t in state.items()}


def _owner(key: str) -> str:
    return key.rpartition(".")[0]


def _layer_dtypes(wanted: Mapping[str, _Want], refs: Mapping[str, str],
                  entries: Mapping[str, dict[str, Any]]) -> dict[str, str]:
    """Per layer, the one floating dtype its tensors have in the file (layers that agree only)."""
    seen: dict[str, set[str]] = {}
    for key, want in wanted.items():
        entry = entries.get(refs.get(key, ""))
        if want.floating and entry is not None and _is_floating_name(entry["dtype"]):
            seen.setdefault(_owner(key), set()).add(entry["dtype"])
    return {owner: next(iter(names)) for owner, names in seen.items() if len(names) == 1}


def _is_floating_name(name: str) -> bool:
    return name.startswith(("float", "bfloat"))


def _mismatches(wanted: Mapping[str, _Want], refs: Mapping[str, str], entries: Mapping[str, dict[str, Any]],
                *, strict: bool) -> list[str]:
    """One line per key whose file tensor is missing, extra (strict), or of another shape/dtype."""
    layer_dtype = _layer_dtypes(wanted, refs, entries)
    lines = []
    for key, want in wanted.items():
        dtype = layer_dtype.get(_owner(key), want.dtype) if want.floating else want.dtype
        expected = _describe(want.shape, dtype)
        entry = entries.get(refs.get(key, ""))
        if entry is None:
            lines.append(f"{key}: expected {expected}, missing from the file")
            continue
        got = _describe(entry["shape"], entry["dtype"])
        if tuple(entry["shape"]) != want.shape or entry["dtype"] != dtype:
            lines.append(f"{key}: expected {expected}, file has {got}" + _mixed_hint(key, want, layer_dtype))
    if strict:
        lines += [f"{key}: in the file ({_describe(entries[ref]['shape'], entries[ref]['dtype'])}) but not "
                  "implied by the spec" for key, ref in refs.items() if key not in wanted]
    return lines


def _mixed_hint(key: str, want: _Want, layer_dtype: Mapping[str, str]) -> str:
    if want.floating and _owner(key) not in layer_dtype:
        return " (the tensors of this layer have different floating dtypes; a layer needs one)"
    return ""


def _raise_mismatches(lines: Sequence[str], source: str, what: str) -> None:
    if lines:
        err = WeightsMismatchError(f"{len(lines)} mismatch(es) between {what}:\n  " + "\n  ".join(lines),
                                   source=source)
        err.lines = list(lines)  # type: ignore[attr-defined]
        raise err


def cross_check(spec: Any, pack: api.Pack, *, strict: bool = True) -> dict[str, str]:
    """Check the pack's tensors against what ``spec`` implies, reading no tensor data.

    Every parameter and buffer of the spec's model must be in the file with
    exactly its shape and dtype (see the module's dtype policy); with
    ``strict`` nothing else may be there. All mismatches are raised at once in
    one WeightsMismatchError, one line each. Returns state_dict key -> tensor name.
    """
    meta = build_validated(prepare(spec), device="meta")
    return _cross_check(meta, pack, strict=strict)


def _cross_check(meta: nn.Module, pack: api.Pack, *, strict: bool) -> dict[str, str]:
    refs = state_refs(pack)
    lines = _mismatches(_wanted(meta), refs, pack.entries, strict=strict)
    _raise_mismatches(lines, pack.path, "the spec and the weights")
    return refs


# --------------------------------------------------------------------------- load_model


def _as_torch(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    return torch.from_numpy(np.asarray(value))  # numpy kinds: shares memory


def load_model(
    path: Any,
    *,
    map_location: Any = None,
    mmap: bool = True,
    strict: bool = True,
    outputs: Sequence[str] | None = None,
    dtype: Any = None,
    device_map: Mapping[str, Any] | None = None,
) -> SpecModule:
    """Rebuild a packed model with no user code, in eval mode.

    The spec is validated, built on the meta device and cross-checked against
    the weights before anything runs; then the module takes the file's tensors
    (memory-mapped, copy-on-write, when ``mmap``) as its parameters and buffers.
    ``outputs=["hidden"]`` cuts the graph: the model returns those nodes' values
    and holds only the layers they need. ``strict=False`` tolerates tensors in the
    file that the spec does not use. ``map_location`` (e.g. ``"cuda"``) moves the
    model after loading (``"cuda"`` stages through pinned memory).
    ``device_map={"encoder": "cuda:0", "": "cpu"}`` places each tensor by the
    longest matching state_dict key prefix instead. ``dtype``
    (``torch.bfloat16``, ``"float16"``) casts floating tensors one at a time as
    they are read, never integer or bool ones; ``"auto"`` keeps the file's.
    The path may be a URL, bytes or a file object, as for ``modelpack.load``.
    """
    with api.Pack(path) as pack:
        # bytes, never str: a one-line str is a *path* to prepare/validate, and the text comes from the file
        full = prepare(_spec_text(pack).encode("utf-8"), source=f"{pack.path}:spec.yaml")
        # before building anything: the limits, and the file (each key refers to a tensor; tied keys share one)
        held = sum(1 for _ in tree.iter_refs(pack.manifest["tree"]))
        check_file_holds(check_cost(full), held, f"{pack.path}:spec.yaml")
        module = build_validated(full, device="meta")
        refs = _cross_check(module, pack, strict=strict)  # the whole file, even when cutting
        if outputs is not None:
            module = build_validated(subgraph(full, list(outputs)), device="meta")
        follow_key_order(module, refs)  # the original's state_dict order, which the file keeps
        _assign(module, pack, refs, mmap=mmap, placement=_Placement(dtype, map_location, device_map))
    module.eval()
    if map_location is not None and not device_map:  # tensors are there already; lets RNNs re-flatten weights
        module.to(map_location)
    return module


def _spec_text(pack: api.Pack) -> str:
    if pack.spec_text is None:
        raise WeightsMismatchError("the file holds tensors but no model spec (spec.yaml); load it with "
                                   "modelpack.load, or its weights into a module with modelpack.load_weights",
                                   source=pack.path)
    return pack.spec_text


@dataclasses.dataclass(frozen=True)
class _Placement:
    """Where and in which dtype load_model puts each tensor."""

    dtype: Any = None
    map_location: Any = None
    device_map: Mapping[str, Any] | None = None

    def __call__(self, key: str, tensor: torch.Tensor) -> torch.Tensor:
        device = api.device_for(key, self.device_map) if self.device_map else self.map_location
        return place(tensor, dtype=self.dtype, device=device)


def _assign(module: nn.Module, pack: api.Pack, refs: Mapping[str, str], *, mmap: bool, placement: _Placement) -> None:
    """Give the meta module the file's tensors for every state_dict key; then nothing may be left on meta."""
    given = _give(module, pack, refs, held_tensors(module), mmap=mmap, placement=placement)
    finish()
    _check_materialized(module, given, pack.path)


def _give(module: nn.Module, pack: api.Pack, refs: Mapping[str, str], keys: Iterable[str], *, mmap: bool,
          placement: _Placement) -> set[int]:
    """Make the file's tensors the module's own for ``keys``: one Parameter per stored tensor, buffers as buffers.

    Each stored tensor is moved to ``map_location`` once, before it is shared, so
    tied weights stay one object on any device (``Module.to`` would untie them
    where it cannot move in place, e.g. to meta). Returns the ids of what was given.
    """
    tensors: dict[str, torch.Tensor] = {}
    params: dict[str, nn.Parameter] = {}
    for key in keys:
        ref = refs[key]
        if ref not in tensors:
            tensors[ref] = placement(key, _as_torch(pack.tensor(ref, mmap=mmap)))
        owner_name, _, leaf = key.rpartition(".")
        owner = registered(module, owner_name)
        if leaf in owner._parameters:
            if ref not in params:
                old = owner._parameters[leaf]
                params[ref] = nn.Parameter(tensors[ref], requires_grad=bool(old is None or old.requires_grad))
            setattr(owner, leaf, params[ref])  # setattr: RNNs keep their flat weight list in sync
        else:
            setattr(owner, leaf, tensors[ref])
    return {id(t) for t in (*tensors.values(), *params.values())}


def _check_materialized(module: nn.Module, assigned: set[int], source: str) -> None:
    """Every parameter and buffer must now be a tensor from the file (non-persistent buffers are not)."""
    left = [name for name, t in (*module.named_parameters(), *module.named_buffers()) if id(t) not in assigned]
    if left:
        raise WeightsMismatchError(f"no data for {', '.join(left)} (not saved in the state_dict)", source=source)


# --------------------------------------------------------------------------- load_weights


@dataclasses.dataclass
class LoadReport:
    """What :func:`load_weights` did: keys are the module's state_dict keys.

    ``matched`` were loaded; ``missing`` are in the module but not in the
    selection; ``unused`` were selected in the file but the module has no such
    key; ``mismatched`` lines name keys present in both with another shape or
    dtype (never loaded).
    """

    source: str
    prefix: str | None
    matched: list[str] = dataclasses.field(default_factory=list)
    missing: list[str] = dataclasses.field(default_factory=list)
    unused: list[str] = dataclasses.field(default_factory=list)
    mismatched: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every selected tensor found its key and every key got a tensor."""
        return not (self.missing or self.unused or self.mismatched)

    def problems(self) -> list[str]:
        """One line per missing, unused or mismatched key."""
        return ([f"{k}: in the module, missing from the file's selection" for k in self.missing]
                + [f"{k}: selected in the file, the module has no such key" for k in self.unused]
                + self.mismatched)

    def __str__(self) -> str:
        head = (f"{len(self.matched)} loaded, {len(self.missing)} missing, {len(self.unused)} unused, "
                f"{len(self.mismatched)} mismatched from {self.source}"
                + (f" (prefix {self.prefix!r})" if self.prefix else ""))
        return "\n  ".join([head, *self.problems()])


Rename = Mapping[str, str] | Callable[[str], str]


def load_weights(
    module: nn.Module,
    path: str | os.PathLike[str],
    *,
    prefix: str | None = None,
    rename: Rename | None = None,
    strict: bool = True,
    assign: bool = False,
) -> LoadReport:
    """Copy tensors of a .mpk (a model file or any saved tensor dict) into an existing module.

    ``prefix="backbone."`` selects the file keys under that prefix and strips it;
    a prefix that selects nothing is an error. ``rename`` (a mapping or a
    function) then maps a file key to the module's key. Shapes and dtypes must
    match exactly. With ``strict`` anything missing, unused or mismatched raises
    WeightsMismatchError (before anything is copied); otherwise the matching
    tensors are loaded and the report says what was not.

    Values are copied into the module's tensors, except with ``assign=True``:
    then the file's tensors themselves (memory-mapped, copy-on-write) become the
    module's parameters and buffers, as with torch's ``load_state_dict(assign=True)``.
    A module built on the meta device holds no data to copy into, so it needs
    ``assign=True``; without it its meta tensors are mismatches (and, when not
    ``strict``, a UserWarning names them, as torch's ``load_state_dict`` does).
    """
    with api.Pack(path) as pack:
        selected = _select(state_refs(pack, flatten=True), prefix, rename, pack.path)
        report, meta = _plan(module, selected, pack, prefix, assign=assign)
        if strict and not report.ok:
            _raise_mismatches(report.problems(), pack.path, "the file's selection and the module")
        _warn_meta(meta)
        if assign:
            _give(module, pack, selected, report.matched, mmap=True, placement=_Placement())
        else:
            _copy(module, selected, report.matched, pack)
    return report


def _select(refs: Mapping[str, str], prefix: str | None, rename: Rename | None, source: str) -> dict[str, str]:
    if prefix:
        chosen = {k[len(prefix):]: v for k, v in refs.items() if k.startswith(prefix) and len(k) > len(prefix)}
        if not chosen:
            tops = sorted({k.split(".")[0] for k in refs})
            raise WeightsMismatchError(f"prefix {prefix!r} selects no tensor; the file's keys start with: "
                                       f"{', '.join(tops[:20]) or 'nothing (no tensors)'}", source=source)
    else:
        chosen = dict(refs)
    return chosen if rename is None else _renamed(chosen, rename, source)


def _renamed(chosen: Mapping[str, str], rename: Rename, source: str) -> dict[str, str]:
    mapper = (lambda k: rename.get(k, k)) if isinstance(rename, Mapping) else rename
    out: dict[str, str] = {}
    for key, ref in chosen.items():
        new = mapper(key)
        if new in out:
            raise WeightsMismatchError(f"rename maps two file keys to {new!r}", source=source)
        out[new] = ref
    return out


def _plan(module: nn.Module, selected: Mapping[str, str], pack: api.Pack, prefix: str | None, *,
          assign: bool) -> tuple[LoadReport, list[str]]:
    """What would load, and the keys whose module tensor is on the meta device (not loadable by copy)."""
    report = LoadReport(pack.path, prefix)
    meta = []
    for key, t in module.state_dict(keep_vars=True).items():
        ref = selected.get(key)
        if ref is None:
            report.missing.append(key)
            continue
        entry = pack.entries[ref]
        want, got = _describe(t.shape, _dtype_name(t.dtype)), _describe(entry["shape"], entry["dtype"])
        if want != got:
            report.mismatched.append(f"{key}: the module has {want}, file has {got}")
        elif t.is_meta and not assign:
            meta.append(key)
            report.mismatched.append(f"{key}: the module's tensor is on the meta device, which holds no data to "
                                     "copy into; pass assign=True to make the file's tensor the module's")
        else:
            report.matched.append(key)
    keys = set(module.state_dict(keep_vars=True))
    report.unused = [k for k in selected if k not in keys]
    return report, meta


def _warn_meta(keys: Sequence[str]) -> None:
    if keys:
        warnings.warn(f"load_weights: {len(keys)} tensor(s) of the module are on the meta device and were not "
                      f"loaded ({', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''}): copying into a meta "
                      "tensor is a no-op; pass assign=True", UserWarning, stacklevel=3)


@torch.no_grad()
def _copy(module: nn.Module, selected: Mapping[str, str], keys: Iterable[str], pack: api.Pack) -> None:
    state = module.state_dict(keep_vars=True)
    for key in keys:
        state[key].copy_(_as_torch(pack.tensor(selected[key])))
