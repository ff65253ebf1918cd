"""The JSON Schema (Draft 2020-12) of the spec language, generated from the vocabulary table.

``schemas/modelpack-spec.schema.json`` is this module's output, committed; a test
regenerates it and fails on any difference. Regenerate with::

    modelpack schema > schemas/modelpack-spec.schema.json

The validator in this package uses the same fragments: the document skeleton
(everything but the per-layer argument dispatch) and one ``$defs`` entry per
layer/op for its ``args``. Every reference is local (``#/$defs/...``); the
validators are built on an empty registry, so nothing is ever fetched.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterator
from typing import Any

import referencing
from jsonschema import Draft202012Validator, ValidationError, validators

from ..codec import DTYPES
from ..vocab import LAYERS, OPS, VOCAB_VERSION, Arg
from ..vocab.types import _Entry
from .names import IDENT_PATTERN, NAME_PATTERN

__all__ = [
    "SCHEMA_ID",
    "schema_dict",
    "schema_text",
    "entry_def_name",
    "skeleton_validator",
    "args_validator",
    "StrictValidator",
]

SCHEMA_ID = f"urn:modelpack:spec:{VOCAB_VERSION}"
_DEFS = "#/$defs/"
KINDS = ("layer", "op", "block")


def _strict_int(checker: Any, instance: Any) -> bool:
    return isinstance(instance, int) and not isinstance(instance, bool)


def _strict_number(checker: Any, instance: Any) -> bool:
    return isinstance(instance, (int, float)) and not isinstance(instance, bool)


def _canonical(value: Any) -> Any:
    """A hashable stand-in equal for values JSON Schema calls equal (1 == 1.0, true != 1, key order)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return (type(value).__name__, value)
    if isinstance(value, (int, float)):
        return ("number", int(value) if isinstance(value, float) and value.is_integer() else value)
    if isinstance(value, list):
        return ("array", tuple(_canonical(v) for v in value))
    if isinstance(value, dict):
        return ("object", frozenset((k, _canonical(v)) for k, v in value.items()))
    return ("other", id(value))


def _unique_items(validator: Any, unique: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    """uniqueItems by hashing: jsonschema falls back to comparing every pair when items do not sort
    (mixed types), which a file turns into quadratic time."""
    if not (unique and validator.is_type(instance, "array")):
        return
    seen: set[Any] = set()
    for item in instance:
        key = _canonical(item)
        if key in seen:
            yield ValidationError(f"has the element {_short(item)} twice; each must be unique")
            return
        seen.add(key)


def _short(value: Any, n: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= n else text[:n] + "..."


def _bound(keyword: str) -> Any:
    """``minimum``/``maximum`` that also refuse NaN, which every comparison lets through."""
    check = Draft202012Validator.VALIDATORS[keyword]

    def bound(validator: Any, limit: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
        if isinstance(instance, float) and math.isnan(instance):
            if keyword == "minimum" or "minimum" not in schema:  # one error for both bounds
                yield ValidationError(f"nan is not a finite number; the {keyword} is {limit!r}")
            return
        yield from check(validator, limit, instance, schema)

    return bound


# JSON Schema's "integer" accepts 2.0; ours does not (a spec says 2 when it means 2).
StrictValidator = validators.extend(
    Draft202012Validator,
    validators={"uniqueItems": _unique_items, "minimum": _bound("minimum"), "maximum": _bound("maximum")},
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine_many(
        {"integer": _strict_int, "number": _strict_number}
    ),
)


def entry_def_name(kind: str, name: str) -> str:
    """The ``$defs`` key holding the args schema of a layer or op: ``layer.Linear``, ``op.relu``."""
    return f"{kind}.{name}"


# ----------------------------------------------------------------------------- arguments


def _bounds(arg: Arg) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if arg.minimum is not None:
        out["minimum"] = arg.minimum
    if arg.maximum is not None:
        out["maximum"] = arg.maximum
    return out


def _list_of(item_type: str, arg: Arg) -> dict[str, Any]:
    out: dict[str, Any] = {"items": {"type": item_type, **_bounds(arg)}}
    if arg.length is not None:
        out["minItems"] = out["maxItems"] = arg.length
    return out


def _typed(arg: Arg) -> dict[str, Any]:
    """The strict schema of one argument type (before null/keywords/params)."""
    t = arg.type
    if t in ("int", "float"):
        return {"type": "integer" if t == "int" else "number", **_bounds(arg)}
    if t == "bool":
        return {"type": "boolean"}
    if t == "str":
        return {"type": "string", **({"enum": list(arg.choices)} if arg.choices else {})}
    if t in ("ints", "floats"):
        scalar = "integer" if t == "ints" else "number"
        return {"type": [scalar, "array"], **_bounds(arg), **_list_of(scalar, arg)}
    if t == "int_list":
        return {"type": "array", **_list_of("integer", arg)}
    if t == "dtype":
        return {"enum": list(DTYPES)}
    return {"$ref": _DEFS + t}  # "size", "value": recursive definitions of their own


def _widen(schema: dict[str, Any], arg: Arg) -> dict[str, Any]:
    """Add null (nullable) and string keywords (padding='same') to a strict schema."""
    extra = (["null"] if arg.nullable else []) + (["string"] if arg.keywords else [])
    if "type" in schema and extra:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        schema = {**schema, "type": types + extra}
    if "enum" in schema and arg.nullable:
        schema = {**schema, "enum": schema["enum"] + [None]}
    if arg.keywords:
        schema["pattern"] = "^(?:" + "|".join(arg.keywords) + ")$"
    return schema


_RECURSIVE = ("size", "value")  # argument types whose definitions name themselves (and admit {param})


def arg_schema(arg: Arg, *, params: bool = True) -> dict[str, Any]:
    """One argument: its strict schema, or (``params``) a block parameter placeholder ``{param: name}``.

    The validator checks args after block parameters are substituted, so it uses
    the strict schemas alone (``params=False``); editors see the published union.
    """
    strict = _widen(_typed(arg), arg)
    out: dict[str, Any] = strict
    if params and arg.type not in _RECURSIVE:
        out = {"anyOf": [strict, {"$ref": _DEFS + "param"}]}
    if not arg.required:
        out = {**out, "default": arg.default}
    if arg.doc:
        out = {**out, "description": arg.doc}
    return out


def _entry_def(kind: str, entry: _Entry, params: bool) -> dict[str, Any]:
    origin = "torch.nn." if kind == "layer" else "torch / torch.nn.functional "
    return {
        "type": "object",
        "description": f"{entry.doc} ({origin}{entry.name}; since version {entry.since})",
        "properties": {a.name: arg_schema(a, params=params) for a in entry.args},
        "required": [a.name for a in entry.args if a.required],
        "additionalProperties": False,
    }


# ----------------------------------------------------------------------------- document


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _DEFS + name}


def _common_defs() -> dict[str, Any]:
    return {
        "name": {"type": "string", "pattern": NAME_PATTERN, "description": "a node name: layer1.0.conv1"},
        "identifier": {"type": "string", "pattern": IDENT_PATTERN},
        "ref": {"type": "object", "properties": {"ref": _ref("name")}, "required": ["ref"],
                "additionalProperties": False, "description": "the value of another node"},
        "param": {"type": "object", "properties": {"param": _ref("identifier")}, "required": ["param"],
                  "additionalProperties": False, "description": "a block parameter (inside blocks only)"},
        "size": {
            "description": "an int, {ref: node} (a size computed in the graph), {param: name}, or a list of "
                           "them (null items keep a dim); never a float",
            "type": ["null", "integer", "array", "object"],
            "items": _ref("size"),
            "properties": {"ref": _ref("name"), "param": _ref("identifier")},
            "minProperties": 1, "maxProperties": 1, "additionalProperties": False,
        },
        "value": {
            "description": "a literal, a list of values, {ref: node} or {param: name}",
            "type": ["null", "boolean", "number", "string", "array", "object"],
            "items": _ref("value"),
            "properties": {"ref": _ref("name"), "param": _ref("identifier")},
            "minProperties": 1, "maxProperties": 1, "additionalProperties": False,
        },
        "input": {
            "type": "object",
            "properties": {
                "shape": {"type": "array", "description": "sizes; a name is a symbolic size",
                          "items": {"type": ["integer", "string"], "minimum": 0, "pattern": IDENT_PATTERN}},
                "dtype": {"enum": list(DTYPES), "default": "float32"},
            },
            "required": ["shape"], "additionalProperties": False,
        },
        "block": {
            "type": "object",
            "properties": {
                "params": {"type": "array", "items": _ref("identifier"), "uniqueItems": True},
                "inputs": {"type": "array", "items": _ref("identifier"), "minItems": 1, "uniqueItems": True},
                "nodes": {"type": "array", "items": _ref("node"), "minItems": 1},
                "outputs": {"type": "array", "items": _ref("name"), "minItems": 1},
            },
            "required": ["inputs", "nodes", "outputs"], "additionalProperties": False,
        },
    }


def _node_def(dispatch: bool) -> dict[str, Any]:
    node: dict[str, Any] = {
        "type": "object",
        "properties": {
            "name": _ref("name"),
            "layer": {"enum": list(LAYERS)},
            "op": {"enum": list(OPS)},
            "block": _ref("identifier"),
            "args": {"type": "object"},
            "in": {"type": ["string", "array"], "pattern": NAME_PATTERN, "items": _ref("name")},
        },
        "required": ["name"],
        "additionalProperties": False,
        # exactly one kind: at least one (anyOf) and no second one after the first (dependentSchemas);
        # unlike oneOf this costs a valid node no failed branch, a third of the validation time
        "anyOf": [{"required": [k]} for k in KINDS],
        "dependentSchemas": {k: {"properties": {other: False for other in KINDS[i + 1:]}}
                             for i, k in enumerate(KINDS[:-1])},
    }
    if dispatch:
        node["allOf"] = [_dispatch(kind, e) for kind, table in (("layer", LAYERS), ("op", OPS))
                         for e in table.values()]
    return node


def _dispatch(kind: str, entry: _Entry) -> dict[str, Any]:
    then: dict[str, Any] = {"properties": {"args": _ref(entry_def_name(kind, entry.name))}}
    if any(a.required for a in entry.args):
        then["required"] = ["args"]
    return {"if": {"properties": {kind: {"const": entry.name}}, "required": [kind]}, "then": then}


def _build(published: bool) -> dict[str, Any]:
    """The published schema, or the validator's variant (no dispatch, strict args; see module doc)."""
    defs = _common_defs()
    defs["node"] = _node_def(dispatch=published)
    for kind, table in (("layer", LAYERS), ("op", OPS)):
        for entry in table.values():
            defs[entry_def_name(kind, entry.name)] = _entry_def(kind, entry, params=published)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": f"modelpack spec, version {VOCAB_VERSION}",
        "description": "A model architecture drawn from modelpack's closed vocabulary (see docs/SPEC.md).",
        "type": "object",
        "properties": {
            "modelpack": {"enum": list(range(1, VOCAB_VERSION + 1)),
                          "description": "spec format version (older ones are migrated on load)"},
            "name": {"type": "string", "minLength": 1},
            "inputs": {"type": "object", "propertyNames": _ref("identifier"),
                       "additionalProperties": _ref("input"), "minProperties": 1},
            "sizes": {"type": "object", "propertyNames": _ref("identifier"),
                      "additionalProperties": {
                          "type": "object", "minProperties": 1, "additionalProperties": False,
                          "properties": {"min": {"type": "integer", "minimum": 0},
                                         "max": {"type": "integer", "minimum": 0}}},
                      "description": "bounds of symbolic input sizes: size name -> {min, max} (inclusive)"},
            "blocks": {"type": "object", "propertyNames": _ref("identifier"),
                       "additionalProperties": _ref("block")},
            "nodes": {"type": "array", "items": _ref("node"), "minItems": 1},
            "outputs": {"type": ["array", "object"], "items": _ref("name"), "minItems": 1,
                        "propertyNames": _ref("identifier"), "additionalProperties": _ref("name"),
                        "minProperties": 1, "description": "node names, or output name -> node name"},
            "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
        },
        "required": ["modelpack", "inputs", "nodes", "outputs"],
        "additionalProperties": False,
        "$defs": defs,
    }


def schema_dict() -> dict[str, Any]:
    """The published schema, as a fresh dict."""
    schema: dict[str, Any] = json.loads(schema_text())
    return schema


@functools.cache
def schema_text() -> str:
    """The published schema as canonical JSON text (indent 2, sorted keys, trailing newline)."""
    return json.dumps(_build(published=True), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# ----------------------------------------------------------------------------- validators


@functools.cache
def _skeleton() -> dict[str, Any]:
    return _build(published=False)


def _inline(schema: Any, defs: dict[str, Any]) -> Any:
    """Replace local refs by their targets (all but the recursive ``size`` and ``value``): the same schema,
    minus a registry lookup per reference, which dominates jsonschema's time on specs."""
    if isinstance(schema, list):
        return [_inline(s, defs) for s in schema]
    if not isinstance(schema, dict):
        return schema
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith(_DEFS) and ref[len(_DEFS):] not in _RECURSIVE and len(schema) == 1:
        return _inline(defs[ref[len(_DEFS):]], defs)
    return {k: (_inline(v, defs) if k not in ("enum", "const") else v) for k, v in schema.items()}


def _validator(root_ref: str | None) -> Any:
    root = _skeleton()
    defs = root["$defs"]
    schema = _inline({"$ref": root_ref} if root_ref else {k: v for k, v in root.items() if k != "$defs"}, defs)
    schema = {**schema, "$schema": root["$schema"], "$defs": {k: _inline(defs[k], defs) for k in _RECURSIVE}}
    return StrictValidator(schema, registry=referencing.Registry())


@functools.cache
def skeleton_validator() -> Any:
    """Checks the whole document except each node's args (those go through args_validator)."""
    return _validator(None)


@functools.cache
def args_validator(kind: str, name: str) -> Any:
    """Checks the (parameter-substituted) args of one layer/op against its ``$defs`` entry."""
    return _validator(_DEFS + entry_def_name(kind, name))
