"""The ModelPackError tree: every failure a user can hit is one of these.

Each error carries *where* it happened (a file member, a tensor name, a spec
path such as ``nodes[3].args.out_features``) and, for specs, the YAML line and
column, so the CLI can print ``file:line:col: where: message`` and callers can
catch by family or by the natural builtin (``ValueError``, ``OSError``...).
"""

from __future__ import annotations

__all__ = [
    "ModelPackError",
    "FormatError",
    "NotAModelPackError",
    "IntegrityError",
    "LimitError",
    "UnsupportedObjectError",
    "SpecError",
    "ShapeError",
    "BuildError",
    "ExportError",
    "WeightsMismatchError",
    "CheckpointError",
    "MissingDependencyError",
    "ConvertError",
]


class ModelPackError(Exception):
    """Base class of every error modelpack raises on purpose.

    ``where`` names the member, tensor or spec path at fault; ``source`` the
    file; ``line``/``column`` (1-based) point into a YAML spec when known.
    """

    def __init__(
        self,
        message: str,
        *,
        where: str | None = None,
        source: str | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.message = message
        self.where = where
        self.source = source
        self.line = line
        self.column = column
        super().__init__(self._render())

    def _render(self) -> str:
        prefix = ""
        if self.source:
            prefix = self.source
            if self.line is not None:
                prefix += f":{self.line}"
                if self.column is not None:
                    prefix += f":{self.column}"
            prefix += ": "
        if self.where:
            prefix += f"{self.where}: "
        return prefix + self.message

    def with_context(self, *, source: str | None = None, where: str | None = None) -> "ModelPackError":
        """Fill in the file or an outer location while the error unwinds."""
        if source and not self.source:
            self.source = source
        if where:
            self.where = f"{where}.{self.where}" if self.where else where
        self.args = (self._render(),)
        return self


class FormatError(ModelPackError, ValueError):
    """The file is not a well-formed .mpk (zip structure, manifest, npy headers)."""


class NotAModelPackError(FormatError):
    """The file is something else entirely (a pickle, a safetensors file, empty...)."""


class IntegrityError(FormatError):
    """Bytes do not match their recorded checksum: corruption or tampering."""


class LimitError(ModelPackError, ValueError):
    """A named safety limit (see ``modelpack.limits``) was exceeded."""


class UnsupportedObjectError(ModelPackError, TypeError):
    """An object in the tree to save has a type modelpack cannot store."""


class SpecError(ModelPackError, ValueError):
    """A layer spec is invalid (YAML, schema, graph or version)."""


class ShapeError(SpecError):
    """Declared input shapes do not flow through the spec's layers."""


class BuildError(ModelPackError, ValueError):
    """A valid spec could not be turned into a torch module."""


class ExportError(ModelPackError, ValueError):
    """A torch module cannot be expressed in the vocabulary."""


class WeightsMismatchError(ModelPackError, ValueError):
    """The weights in a file do not match what the spec implies."""


class CheckpointError(ModelPackError, RuntimeError):
    """A training checkpoint could not be written or restored."""


class MissingDependencyError(ModelPackError, ImportError):
    """An optional dependency (torch) is needed for this call."""


class ConvertError(ModelPackError, ValueError):
    """A foreign file (safetensors, torch state dict, Hugging Face folder) cannot be converted, or a pack
    cannot be expressed in the target format."""
