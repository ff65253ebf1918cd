"""The Checkpointer in distributed runs: each checkpoint is a DCP folder written through modelpack.dcp.

``ckpt-<step>.dcp/`` holds every rank's shard and the metadata pack; the
coordinator writes that pack last, which commits the checkpoint (a folder
without it is never listed, and the next save removes it). Model and optimizer
go through ``get_state_dict``/``set_state_dict``, so FSDP2 and other sharded
states load on any world size; each rank's RNG streams are saved under its
rank. Only the coordinator prunes, and only after the commit.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import sys
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ..dcp import METADATA_FILE
from ..errors import CheckpointError
from . import _state

__all__ = ["active", "rank", "folder_name", "is_folder_name", "save", "read_header", "restore", "sweep_uncommitted"]

SUFFIX = ".dcp"


def active() -> bool:
    """An initialised torch.distributed process group is in use (torch already imported by the caller)."""
    torch = sys.modules.get("torch")
    dist = getattr(torch, "distributed", None) if torch is not None else None
    return bool(dist is not None and dist.is_available() and dist.is_initialized())


def rank() -> int:
    if not active():
        return 0
    import torch.distributed as dist

    return dist.get_rank()


def folder_name(file_name: str) -> str:
    """``ckpt-000000001200.mpk`` -> ``ckpt-000000001200.dcp``."""
    return file_name.removesuffix(".mpk") + SUFFIX


def is_folder_name(name: str) -> bool:
    return name.endswith(SUFFIX)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """DCP warns when no process group exists; a single process restoring a folder is fine."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.distributed is disabled.*", category=UserWarning)
        yield


def _model_optimizer(model: Any, optimizer: Any) -> tuple[Any, Any]:
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict

    if optimizer is None:
        return (get_model_state_dict(model) if model is not None else None), None
    if model is None or isinstance(model, (list, tuple, Mapping)) or isinstance(optimizer, (list, tuple, Mapping)):
        raise CheckpointError("in a distributed run, optimizer= needs model= (one module and one optimizer)")
    return get_state_dict(model, optimizer)


def collect(step: int, components: Mapping[str, Any], extra: Any, generators: Mapping[str, Any] | None,
            rng: bool, header: Mapping[str, Any]) -> dict[str, Any]:
    """The state dict one distributed checkpoint stores (each rank passes its own RNG streams)."""
    msd, osd = _model_optimizer(components.get("model"), components.get("optimizer"))
    state: dict[str, Any] = dict(header)
    if msd is not None:
        state["model"] = msd
    if osd is not None:
        state["optimizer"] = osd
    for name in ("scheduler", "scaler"):
        if components.get(name) is not None:
            state[name] = _state.component_state(components[name], name)
    if extra is not None:
        state["extra"] = extra
    if generators:
        state["generators"] = {f"rank{rank()}": _state.capture_generators(generators)}
    if rng:
        state["rng"] = {f"rank{rank()}": _state.capture_rng()}
    return state


def save(folder: Path, state: dict[str, Any], blocking: bool) -> Any:
    """Write through DCP; returns None, or the future of an ``async_save``."""
    import torch.distributed.checkpoint as dcp

    from ..dcp import MpkStorageWriter

    with _quiet():
        if blocking:
            dcp.save(state, storage_writer=MpkStorageWriter(folder))
            return None
        return dcp.async_save(state, storage_writer=MpkStorageWriter(folder), process_group=_async_group())


_GROUPS: dict[Any, Any] = {}


def _async_group() -> Any:
    """A gloo group of its own for background saves: their collectives must not interleave with training's.

    Created once per default group (creating one is itself a collective every rank makes, in the same
    order, at the first ``save(blocking=False)``).
    """
    if not active():
        return None
    import torch.distributed as dist

    default = dist.group.WORLD
    if default not in _GROUPS:
        _GROUPS[default] = dist.new_group(backend="gloo")
    return _GROUPS[default]


def read_header(folder: Path) -> dict[str, Any]:
    """format, version and step of a committed folder, after the full check (metadata, coverage, checksums)."""
    from .. import dcp
    from ..dcp._reader import MpkStorageReader

    dcp.verify(folder)
    md = MpkStorageReader(folder).read_metadata()
    return _flat_objects(folder, md, {"format", "version", "step"})


def _flat_objects(folder: Path, md: Any, keys: set[str]) -> dict[str, Any]:
    import torch.distributed.checkpoint as dcp

    from ..dcp._reader import MpkStorageReader

    target = {k: None for k in keys if k in md.state_dict_metadata}
    with _quiet():
        dcp.load(target, storage_reader=MpkStorageReader(folder), no_dist=True)
    return target


def restore(folder: Path, components: Mapping[str, Any], generators: Mapping[str, Any] | None, rng: bool,
            strict: bool) -> dict[str, Any]:
    """Load a distributed checkpoint into the given objects on this rank; return the rest of the state."""
    import torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint._nested_dict import unflatten_state_dict
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata
    from torch.distributed.checkpoint.state_dict import set_state_dict

    from ..dcp._reader import MpkStorageReader

    md = MpkStorageReader(folder).read_metadata()
    model, optimizer = components.get("model"), components.get("optimizer")
    msd, osd = _model_optimizer(model, optimizer)
    mine = (f"rng.rank{rank()}.", f"generators.rank{rank()}.")
    flat: dict[str, Any] = {}
    for fqn, item in md.state_dict_metadata.items():
        if fqn.startswith(("model.", "optimizer.")) or (fqn.startswith(("rng.", "generators.")) and
                                                         not fqn.startswith(mine)):
            continue
        flat[fqn] = (torch.empty(tuple(item.size), dtype=item.properties.dtype)
                     if isinstance(item, TensorStorageMetadata) else None)
    target: dict[str, Any] = dict(flat)
    for name, sd in (("model", msd), ("optimizer", osd)):
        if sd is not None:
            if not any(k.startswith(name + ".") for k in md.state_dict_metadata):
                raise CheckpointError(f"{name}= was given but the checkpoint holds no {name} state")
            target[name] = sd
    with _quiet():
        dcp.load(target, storage_reader=MpkStorageReader(folder))
    if msd is not None:
        set_state_dict(model, optimizer if osd is not None else (), model_state_dict=target["model"],
                       optim_state_dict=target.get("optimizer") or {}, options=_options(strict))
    rest = unflatten_state_dict({k: target[k] for k in flat}, {k: md.planner_data[k] for k in flat}) if flat else {}
    _apply_rest(rest, components, generators, rng, strict)
    return rest


def _options(strict: bool) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(strict=strict)


def _apply_rest(rest: Mapping[str, Any], components: Mapping[str, Any], generators: Mapping[str, Any] | None,
                rng: bool, strict: bool) -> None:
    for name in ("scheduler", "scaler"):
        if components.get(name) is not None:
            if name not in rest:
                raise CheckpointError(f"{name}= was given but the checkpoint holds no {name} state")
            _state.load_component(components[name], rest[name], name, strict=strict)
    mine = f"rank{rank()}"
    if generators:
        _state.apply_generators(generators, (rest.get("generators") or {}).get(mine) or {})
    if rng and mine in (rest.get("rng") or {}):
        _state.apply_rng(rest["rng"][mine])


def sweep_uncommitted(directory: Path, prefix: str, saving: Path) -> None:
    """Remove checkpoint folders whose save never committed (a rank died before the metadata pack).

    ``saving`` is left alone: other ranks may already be writing their shards there.
    """
    pattern = re.compile(rf"{re.escape(prefix)}-\d+{re.escape(SUFFIX)}")
    for p in directory.iterdir():
        if p != saving and pattern.fullmatch(p.name) and p.is_dir() and not (p / METADATA_FILE).exists():
            shutil.rmtree(p, ignore_errors=True)


