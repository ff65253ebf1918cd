"""Distributed checkpoints through torch.distributed.checkpoint (DCP), with .mpk shards and no pickle.

``MpkStorageWriter``/``MpkStorageReader`` plug into ``dcp.save``/``dcp.load``;
``consolidate`` turns a checkpoint folder into one .mpk; ``verify`` checks a
whole folder. Importing this package does not import torch: the torch-bound
names are resolved on first use, and ``verify`` never needs torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._layout import METADATA_FILE, is_dcp_folder

__all__ = ["MpkStorageWriter", "MpkStorageReader", "consolidate", "verify", "is_dcp_folder", "METADATA_FILE"]

_LAZY = {
    "MpkStorageWriter": ("modelpack.dcp._writer", "MpkStorageWriter"),
    "MpkStorageReader": ("modelpack.dcp._reader", "MpkStorageReader"),
    "consolidate": ("modelpack.dcp._convert", "consolidate"),
    "verify": ("modelpack.dcp._layout", "verify"),
}

if TYPE_CHECKING:  # pragma: no cover
    from ._convert import consolidate
    from ._layout import verify
    from ._reader import MpkStorageReader
    from ._writer import MpkStorageWriter


def __getattr__(name: str) -> Any:
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'modelpack.dcp' has no attribute {name!r}") from None
    import importlib

    value = getattr(importlib.import_module(module_name), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
