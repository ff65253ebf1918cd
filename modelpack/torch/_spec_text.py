"""Spec dict -> YAML text a person can read: one node per line, in flow style.

The exporter writes specs with this instead of ``yaml.dump`` because a spec is
read by people (``modelpack inspect``, code review of a .mpk's spec.yaml) and
``yaml.dump`` either spreads one node over a dozen lines or wraps flow mappings
at arbitrary points. Only plain data is accepted (str, int, float, bool, None,
list, dict with str keys); the text is parsed back with modelpack's strict
reader and must give the same data, so a quoting mistake here can never reach a
file.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from ..errors import ExportError
from ..spec.yamlio import YAML_NONFINITE

__all__ = ["spec_to_yaml", "scalar_text", "same_data"]

_HEADER = "# modelpack spec (docs/SPEC.md), written by modelpack.export\n"
# Plain (unquoted) strings: identifiers and dotted node names. Anything else is
# double-quoted, as are words some YAML readers (1.1) turn into bools or null.
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*\Z")
_RESERVED = frozenset({"null", "true", "false", "yes", "no", "on", "off", "y", "n"})
_TOP_ORDER = ("modelpack", "name", "inputs", "sizes", "blocks", "nodes", "outputs", "metadata")


def scalar_text(value: Any) -> str:
    """One scalar as YAML: ``relu``, ``"0"``, ``1.0e-05``, ``true``, ``null``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float_text(value)
    if isinstance(value, str):
        plain = _PLAIN.match(value) and value.lower() not in _RESERVED
        return value if plain else json.dumps(value, ensure_ascii=False)
    raise ExportError(f"internal: {type(value).__name__} is not plain spec data")


def _float_text(value: float) -> str:
    """repr, with a '.0' so YAML 1.1 readers also see a float (``1e-05`` -> ``1.0e-05``); YAML's own
    ``.inf``/``-.inf``/``.nan`` for the non-finite (a NaN's sign and payload are not kept)."""
    if not math.isfinite(value):
        return YAML_NONFINITE[repr(value)]
    text = repr(value)
    if "e" in text and "." not in text.split("e")[0]:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}.0e{exponent}"
    return text


def flow(value: Any) -> str:
    """A value in YAML flow style, on one line: ``{in_features: 20, out_features: 256}``."""
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{scalar_text(k)}: {flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(flow(v) for v in value) + "]"
    return scalar_text(value)


def _block_mapping(value: Mapping[str, Any], indent: str) -> list[str]:
    """``key: {flow}`` lines, one per entry (inputs, outputs given as a mapping)."""
    return [f"{indent}{scalar_text(k)}: {flow(v)}" for k, v in value.items()]


def _block_lines(block: Mapping[str, Any]) -> list[str]:
    """One block definition: its keys in order, its nodes one per line like the top-level ones."""
    lines = []
    for key, value in block.items():
        if key == "nodes" and isinstance(value, list):
            lines.append("    nodes:")
            lines += [f"      - {flow(node)}" for node in value]
        else:
            lines.append(f"    {scalar_text(key)}: {flow(value)}")
    return lines


def spec_to_yaml(spec: Mapping[str, Any]) -> str:
    """The whole document: header comment, then top-level keys in the spec's usual order."""
    lines = [_HEADER.rstrip("\n")]
    keys = [k for k in _TOP_ORDER if k in spec] + [k for k in spec if k not in _TOP_ORDER]
    for key in keys:
        value = spec[key]
        if key == "nodes":
            lines.append("nodes:")
            lines += [f"  - {flow(node)}" for node in value]
        elif key == "blocks" and isinstance(value, Mapping):
            lines.append("blocks:")
            for name, block in value.items():
                lines += [f"  {scalar_text(name)}:", *_block_lines(block)]
        elif isinstance(value, Mapping) and value and key != "outputs":
            lines.append(f"{key}:")
            lines += _block_mapping(value, "  ")
        else:
            lines.append(f"{key}: {flow(value)}")
    text = "\n".join(lines) + "\n"
    _check_round_trip(text, spec)
    return text


def _check_round_trip(text: str, spec: Mapping[str, Any]) -> None:
    """Parse the text back with the strict reader; it must give exactly ``spec``."""
    from ..spec.yamlio import parse_yaml

    data, _ = parse_yaml(text)
    if not same_data(data, spec):
        raise ExportError("internal: the spec text does not read back as the spec it was written from; "
                          "please report this with the model")


def same_data(a: Any, b: Any) -> bool:
    """Equal data with equal types (1 is not 1.0, True is not 1), tuples read back as lists."""
    if isinstance(b, tuple):
        b = list(b)
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same_data(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same_data(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)
