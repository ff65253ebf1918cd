"""modelpack: ship a PyTorch model as one safe file.

``import modelpack`` never imports torch: the torch entry points (export,
load_model, build, load_weights, Checkpointer) and the converters are resolved
lazily on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import limits
from .errors import (
    BuildError,
    CheckpointError,
    ExportError,
    FormatError,
    IntegrityError,
    LimitError,
    ModelPackError,
    NotAModelPackError,
    SpecError,
)

__version__ = "0.1.0"

__all__ = [
    "save",
    "load",
    "save_bytes",
    "load_bytes",
    "open",
    "verify",
    "validate",
    "export",
    "load_model",
    "build",
    "load_weights",
    "convert",
    "digest",
    "Checkpointer",
    "CheckpointWarning",
    "limits",
    "ModelPackError",
    "FormatError",
    "NotAModelPackError",
    "IntegrityError",
    "LimitError",
    "SpecError",
    "BuildError",
    "ExportError",
    "CheckpointError",
]

# name -> (module, attribute); imported on first access so torch stays optional.
_LAZY = {
    "save": ("modelpack.api", "save"),
    "load": ("modelpack.api", "load"),
    "save_bytes": ("modelpack.api", "save_bytes"),
    "load_bytes": ("modelpack.api", "load_bytes"),
    "open": ("modelpack.api", "open"),
    "verify": ("modelpack.checks", "verify"),
    "validate": ("modelpack.checks", "validate"),
    "export": ("modelpack.torch.export", "export"),
    "load_model": ("modelpack.torch.load", "load_model"),
    "build": ("modelpack.torch.build", "build"),
    "load_weights": ("modelpack.torch.load", "load_weights"),
    "convert": ("modelpack.converters", "convert"),
    "digest": ("modelpack.digests", "content_digest"),
    "Checkpointer": ("modelpack.checkpoint", "Checkpointer"),
    "CheckpointWarning": ("modelpack.checkpoint", "CheckpointWarning"),
}

if TYPE_CHECKING:  # pragma: no cover
    from .api import load, load_bytes, open, save, save_bytes
    from .checkpoint import Checkpointer
    from .checks import validate, verify
    from .converters import convert
    from .digests import content_digest as digest
    from .torch.build import build
    from .torch.export import export
    from .torch.load import load_model, load_weights


def __getattr__(name: str) -> Any:
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'modelpack' has no attribute {name!r}") from None
    import importlib

    value = getattr(importlib.import_module(module_name), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
