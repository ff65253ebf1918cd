"""The declarative spec: strict YAML loading, the generated JSON Schema, torch-free validation.

    >>> from modelpack.spec import validate
    >>> data = validate("examples/specs/mlp.yaml")          # doctest: +SKIP

Nothing here imports torch; ``validate(..., shapes=True)`` asks
``modelpack.torch.shapes`` (imported lazily) and skips with a warning without it.
See docs/SPEC.md for the language.
"""

from __future__ import annotations

from .blocks import expand_blocks
from .findings import Finding
from .migrations import CURRENT_VERSION, supported_versions
from .schema import schema_dict, schema_text
from .validate import check_spec, iter_errors, iter_findings, validate
from .yamlio import Positions, Spec, load_spec, parse_yaml

__all__ = [
    "CURRENT_VERSION",
    "Spec",
    "Positions",
    "Finding",
    "load_spec",
    "parse_yaml",
    "validate",
    "check_spec",
    "iter_errors",
    "iter_findings",
    "expand_blocks",
    "schema_dict",
    "schema_text",
    "supported_versions",
]
