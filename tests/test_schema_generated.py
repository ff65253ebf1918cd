"""The committed JSON Schema is exactly what the vocabulary generates, and a valid Draft 2020-12 schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import referencing
import yaml
from jsonschema import Draft202012Validator

from modelpack.codec import DTYPES
from modelpack.spec.schema import entry_def_name, schema_dict, schema_text
from modelpack.vocab import LAYERS, OPS

ROOT = Path(__file__).parent.parent
COMMITTED = ROOT / "schemas" / "modelpack-spec.schema.json"
REGENERATE = "modelpack schema > schemas/modelpack-spec.schema.json"


def test_committed_schema_is_regenerated_exactly() -> None:
    assert COMMITTED.read_text() == schema_text(), f"the vocabulary changed: run `{REGENERATE}`"


def test_schema_text_is_canonical() -> None:
    text = schema_text()
    assert text.endswith("}\n")
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def test_schema_is_valid_draft_2020_12() -> None:
    schema = schema_dict()
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return ([node["$ref"]] if isinstance(node.get("$ref"), str) else []) + [
            r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_every_reference_is_local_and_resolves() -> None:
    schema = schema_dict()
    refs = _refs(schema)
    assert refs and all(r.startswith("#/$defs/") for r in refs)
    assert {r.removeprefix("#/$defs/") for r in refs} <= set(schema["$defs"])


def test_one_definition_per_entry_with_its_arguments() -> None:
    defs = schema_dict()["$defs"]
    for kind, table in (("layer", LAYERS), ("op", OPS)):
        for entry in table.values():
            d = defs[entry_def_name(kind, entry.name)]
            assert d["additionalProperties"] is False
            assert set(d["properties"]) == {a.name for a in entry.args}  # keys are sorted in the file
            assert d["required"] == [a.name for a in entry.args if a.required]
            for a in entry.args:
                if not a.required:
                    assert d["properties"][a.name]["default"] == a.default
    linear = defs["layer.Linear"]["properties"]["out_features"]["anyOf"][0]
    assert linear == {"type": "integer", "minimum": 1}
    assert defs["input"]["properties"]["dtype"]["enum"] == list(DTYPES)


def test_published_schema_alone_checks_the_examples() -> None:
    validator = Draft202012Validator(schema_dict(), registry=referencing.Registry())  # no retrieval
    for path in sorted((ROOT / "examples" / "specs").glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        assert list(validator.iter_errors(data)) == [], path.name
    bad = yaml.safe_load((ROOT / "tests/data/specs/invalid/bad_arg_minimum.yaml").read_text())
    errors = list(validator.iter_errors(bad))
    assert [list(e.absolute_path) for e in errors] == [["nodes", 0, "args", "out_features"]]


@pytest.mark.parametrize("layer", ["Conv2d", "Linear", "LSTM"])
def test_editor_dispatch_knows_each_layer(layer: str) -> None:
    node = schema_dict()["$defs"]["node"]
    rows = [row for row in node["allOf"] if row["if"]["properties"].get("layer", {}).get("const") == layer]
    assert len(rows) == 1
    assert rows[0]["then"]["properties"]["args"] == {"$ref": f"#/$defs/layer.{layer}"}
