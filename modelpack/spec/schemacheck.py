"""Level 1: the JSON Schema checks, with jsonschema's errors turned into our messages.

Every error is kept (not just the best one). A few jsonschema messages are
rewritten so they say what to do: unknown keys and arguments name the nearest
known ones, unknown layers/ops the nearest entries, names the naming rule.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any

from jsonschema import ValidationError

from ..vocab import LAYERS, OPS, Kind, unknown_name_message
from ..vocab.types import _Entry
from .findings import Problem, did_you_mean
from .names import IDENT_PATTERN, NAME_PATTERN, identifier_problem, name_problem
from .schema import KINDS, args_validator, skeleton_validator
from .yamlio import YAML_NONFINITE, Path

__all__ = ["skeleton_problems", "args_messages", "blocks_later_levels"]

Message = tuple[Path, str, bool]  # (path relative to the validated instance, message, point at key)
_KEYWORDS = re.compile(r"\^\(\?:(.*)\)\$\Z")


def skeleton_problems(data: Any) -> list[Problem]:
    """The document checked against the schema skeleton (node args excepted)."""
    out = []
    for err in skeleton_validator().iter_errors(data):
        for path, message, key in _messages(err, None):
            out.append(Problem(path, message, key=key))
    return out


_GRAPH_KEYS = frozenset({"inputs", "blocks", "nodes", "outputs"})


def blocks_later_levels(problem: Problem) -> bool:
    """Whether the graph checks cannot run after this schema problem: a malformed document
    or graph part does; an unknown layer/op name (that node is skipped), ``name``,
    ``metadata`` or an unknown top-level key do not."""
    path = problem.path
    if not path:
        return True
    if path[-1] in ("layer", "op") and problem.message.startswith("unknown"):
        return False
    return path[0] in _GRAPH_KEYS


def args_messages(kind: Kind, name: str, args: Any) -> tuple[Message, ...]:
    """Every problem with the ``args`` of one layer/op node, paths relative to ``args``.

    Memoized on the canonical JSON of the args: block instances and repeated layers
    (N identical encoder layers) share one check. json keeps 2, 2.0 and true apart.
    """
    key = (kind, name, json.dumps(args, sort_keys=True))
    found = _ARGS_CACHE.get(key)
    if found is None:
        entry = (LAYERS if kind == "layer" else OPS)[name]
        found = tuple(m for err in args_validator(kind, name).iter_errors(args) for m in _messages(err, entry))
        if len(_ARGS_CACHE) >= _ARGS_CACHE_SIZE:
            _ARGS_CACHE.clear()
        _ARGS_CACHE[key] = found
    return found


_ARGS_CACHE: dict[tuple[str, str, str], tuple[Message, ...]] = {}
_ARGS_CACHE_SIZE = 4096


def _messages(err: ValidationError, entry: _Entry | None) -> Iterator[Message]:
    path = tuple(err.absolute_path)
    rule = err.validator
    if rule == "anyOf" and _is_param_union(err.validator_value):
        for sub in err.context or ():
            if sub.relative_schema_path[0] == 0:  # the strict branch, not the {param} one
                yield from _messages(sub, entry)
        return
    if rule == "additionalProperties":
        for key in _extra_keys(err):
            yield path + (key,), _unknown_key(key, err.schema.get("properties", {}), entry), True
        return
    yield path, _message(err, path, entry), rule == "required"


def _message(err: ValidationError, path: Path, entry: _Entry | None) -> str:
    rule, instance = err.validator, err.instance
    if rule == "enum" and path and path[-1] in ("layer", "op"):
        return unknown_name_message(instance, path[-1])  # type: ignore[arg-type]
    if rule == "anyOf" and err.validator_value == [{"required": [k]} for k in KINDS]:
        return "a node needs one of 'layer', 'op' or 'block'"
    if err.validator is None and "dependentSchemas" in err.schema_path:  # a `false` schema: a second kind
        return "a node is exactly one kind: give only one of 'layer', 'op' or 'block'"
    if rule == "pattern":
        return _pattern_message(err)
    if rule == "required":
        missing = err.message.split("'")[1] if "'" in err.message else err.message
        if entry is not None:
            needs = ", ".join(a.name for a in entry.args if a.required)
            return f"missing argument {missing!r} ({entry.name} needs {needs})"
        return f"missing required key {missing!r}"
    if rule == "const" and path == ("modelpack",):
        return f"spec version must be {err.validator_value}"
    if rule == "type":
        return _type_message(instance, err.validator_value)
    if rule in ("minimum", "maximum") and isinstance(instance, float) and math.isnan(instance):
        low, high = err.schema.get("minimum"), err.schema.get("maximum")
        bounds = f"{_show(low)} to {_show(high)}" if None not in (low, high) else f"{rule} {_show(err.validator_value)}"
        return f".nan is not a finite number; this argument is bounded ({bounds}) and needs one"
    if rule in ("minimum", "maximum"):
        side = "less than the minimum" if rule == "minimum" else "greater than the maximum"
        return f"{_show(instance)} is {side} of {_show(err.validator_value)}"
    return str(err.message)


_YAML11_BOOLS = frozenset("y Y yes Yes YES n N no No NO on On ON off Off OFF".split())


def _show(value: Any) -> str:
    """A value as the spec writes it (true, null, "text", 2.0), not as Python repr does."""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else YAML_NONFINITE[repr(value)]
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (str, bool, type(None))) else repr(value)


def _type_message(value: Any, expected: Any) -> str:
    wanted = [expected] if isinstance(expected, str) else list(expected)
    text = f"{_show(value)} is not of type {', '.join(repr(t) for t in wanted)}"
    if "integer" in wanted and isinstance(value, float) and not math.isfinite(value):
        return text + "; ints and sizes are finite (non-finite floats stand only where torch takes a float)"
    if "boolean" in wanted and isinstance(value, str) and value in _YAML11_BOOLS:
        return text + "; write true or false"
    if "integer" in wanted and isinstance(value, float) and value.is_integer():
        return text + f"; write {int(value)}"
    if "integer" in wanted and isinstance(value, str) and value[:1].isdigit():
        return text + "; integers are plain decimal (no leading zeros, 0x, or _)"
    return text


def _pattern_message(err: ValidationError) -> str:
    value, pattern = err.instance, err.validator_value
    if pattern == NAME_PATTERN:
        return name_problem(value) or err.message
    if pattern == IDENT_PATTERN:
        return identifier_problem(value, "this") or err.message
    keywords = _KEYWORDS.match(pattern)
    if keywords:
        return f"{value!r} is not one of {', '.join(repr(k) for k in keywords.group(1).split('|'))} (or a number)"
    return str(err.message)


def _is_param_union(branches: Any) -> bool:
    return isinstance(branches, list) and len(branches) == 2 and branches[1] == {"$ref": "#/$defs/param"}


def _extra_keys(err: ValidationError) -> list[str]:
    known = err.schema.get("properties", {})
    return [k for k in err.instance if k not in known] if isinstance(err.instance, dict) else []


def _unknown_key(key: str, known: dict[str, Any], entry: _Entry | None) -> str:
    names = list(known)
    hint = did_you_mean(key, names, n=1)
    if entry is not None:
        return f"unknown argument {key!r} for {entry.name}{hint} (arguments: {', '.join(names) or 'none'})"
    return f"unknown key {key!r}{hint} (allowed: {', '.join(names)})"
