"""The strict YAML reader: plain data, positions, and every refusal (both libyaml and pure Python)."""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import pytest
import yaml

from modelpack import limits
from modelpack.errors import SpecError
from modelpack.spec import yamlio
from modelpack.spec.yamlio import check_plain, format_path, load_spec, parse_yaml

PARSERS = [yaml.SafeLoader] + ([yaml.CSafeLoader] if hasattr(yaml, "CSafeLoader") else [])


@pytest.fixture(params=PARSERS, ids=lambda p: p.__name__)
def parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> type:
    monkeypatch.setattr(yamlio, "_PARSER", request.param)
    return request.param  # type: ignore[no-any-return]


def value(text: str) -> Any:
    return parse_yaml(f"v: {text}\n")[0]["v"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("yes", "yes"), ("no", "no"), ("on", "on"), ("off", "off"), ("Y", "Y"),  # YAML 1.1 booleans stay strings
        ("010", "010"), ("0x1F", "0x1F"), ("0o10", "0o10"), ("1_000", "1_000"),  # only plain decimal ints
        ("12:30", "12:30"), ("12:30:00", "12:30:00"), ("2024-01-01", "2024-01-01"),  # no sexagesimal/dates
        ("true", True), ("false", False), ("True", True), ("FALSE", False),
        ("null", None), ("~", None), ("", None),
        ("0", 0), ("-7", -7), ("+3", 3), ("256", 256), ("9223372036854775807", 2**63 - 1),
        ("2.0", 2.0), ("1e3", 1000.0), ("-1.5e-3", -0.0015), (".5", 0.5),
        ("'3'", "3"), ('"true"', "true"), ("!!str 3", "3"), ("! 3", "3"), ("!!int 3", 3), ("!!float 1", 1.0),
        ("!!bool true", True), ("!!null null", None),
        ("inf", "inf"), ("nan", "nan"), (".nanx", ".nanx"),  # plain words, not numbers
        (".inf", math.inf), ("+.Inf", math.inf), ("-.inf", -math.inf), ("-.INF", -math.inf),  # YAML's non-finite
        ("!!float .inf", math.inf), ("!!float -.inf", -math.inf),
    ],
)
def test_scalars_resolve_without_yaml_1_1_surprises(parser: type, text: str, expected: Any) -> None:
    got = value(text)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize("text", [".nan", ".NaN", ".NAN", "!!float .nan"])
def test_nan_reads_as_the_canonical_quiet_nan(parser: type, text: str) -> None:
    got = value(text)
    assert isinstance(got, float) and struct.pack("<d", got) == struct.pack("<d", math.nan)


def test_check_plain_accepts_non_finite_floats() -> None:
    """Where a non-finite float may stand is the schema's business (floats yes, ints and sizes no)."""
    assert list(check_plain({"a": [math.inf, -math.inf, math.nan]})) == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("NaN", "NaN is not a YAML number: write .inf, -.inf or .nan"), ("Infinity", "write .inf, -.inf or .nan"),
        ("-Infinity", "write .inf, -.inf or .nan"), ("!!float NaN", "write .inf, -.inf or .nan"),
        ("1e999", "does not fit in a 64-bit float; write .inf or -.inf"), ("-1e999", "write .inf or -.inf"),
        ("9223372036854775808", "does not fit in 64 bits"), ("1" * 5000, "does not fit in 64 bits"),
        ("!!python/object/apply:os.system [ls]", "tag '!!python/object/apply:os.system' is not allowed"),
        ("!!python/name:os.system", "is not allowed"), ("!!binary aGk=", "tag '!!binary' is not allowed"),
        ("!!set {a: null}", "tag '!!set' is not allowed"), ("!!timestamp 2024-01-01", "is not allowed"),
        ("!custom x", "tag '!custom' is not allowed"), ("!!int 0x10", "'0x10' is not a valid !!int"),
        ("!!bool yes", "not a valid !!bool"), ("!!omap [a: 1]", "is not allowed"),
    ],
)
def test_refused_scalars(parser: type, text: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        value(text)


@pytest.mark.parametrize(
    ("text", "message", "line", "column"),
    [
        ("a: &x 1\nb: *x\n", "anchors and aliases", 1, 4),
        ("a: [1]\nb: &x [2]\n", "anchors and aliases", 2, 4),
        ("a: &x [*x]\n", "anchors and aliases", 1, 4),
        ("base: {x: 1}\nc:\n  <<: {y: 2}\n", "merge keys", 3, 3),
        ("a: 1\nb: 2\na: 3\n", "duplicate key 'a' \\(first at line 1\\)", 3, 1),
        ('{"a": 1, "a": 2}', "duplicate key 'a'", 1, 10),
        ("1: a\n", "mapping keys must be strings; got 1 \\(int\\)", 1, 1),
        ("true: a\n", "got true \\(bool\\)", 1, 1),
        ("? [a]\n: 1\n", "mapping keys must be plain strings", 1, 3),
        ("a: 1\n---\nb: 2\n", "one YAML document", 2, 1),
        ("", "the spec is empty", 1, 1),
        ("a: b: c\n", "YAML syntax error: mapping values are not allowed", 1, 5),
        ("a: [1, 2\n", "YAML syntax error", None, None),
    ],
)
def test_refused_documents_with_position(parser: type, text: str, message: str, line: int | None,
                                         column: int | None) -> None:
    with pytest.raises(SpecError, match=message) as info:
        parse_yaml(text, source="s.yaml")
    assert info.value.source == "s.yaml"
    if line is not None:
        assert (info.value.line, info.value.column) == (line, column)


def test_billion_laughs_is_refused_at_the_first_anchor(parser: type) -> None:
    lol = "a: &a [lol, lol]\n" + "".join(f"{c}: &{c} [*{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
    with pytest.raises(SpecError, match="anchors and aliases") as info:
        parse_yaml(lol)
    assert info.value.line == 1


def test_nesting_is_bounded(parser: type) -> None:
    deep = "[" * 70 + "]" * 70
    with pytest.raises(SpecError, match="nesting deeper than max_depth=64"):
        parse_yaml(deep)
    with limits.raised(max_depth=100):
        data = parse_yaml(deep)[0]
    for _ in range(69):
        data = data[0]
    assert data == []


def test_size_is_bounded_before_parsing(tmp_path: Any) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("a: " + "x" * 2000 + "\n")
    with limits.raised(max_spec_bytes=1000):
        with pytest.raises(SpecError, match="larger than max_spec_bytes=1,000"):
            load_spec(path)
        with pytest.raises(SpecError, match="larger than max_spec_bytes"):
            parse_yaml(b"a: " + b"x" * 2000)
        with pytest.raises(SpecError, match="larger than max_spec_bytes"):
            parse_yaml("a: " + "x" * 2000)


def test_text_must_be_utf8_and_without_lone_surrogates(parser: type) -> None:
    with pytest.raises(SpecError, match="not UTF-8"):
        parse_yaml(b"a: \xff\xfe\n")
    with pytest.raises(SpecError):
        parse_yaml('a: "\\ud800"\n')
    assert parse_yaml("\ufeffa: 1\n".encode())[0] == {"a": 1}


def test_positions_point_at_values_and_keys(parser: type) -> None:
    text = "a:\n  b: [1, 22]\n  c: {x: 3}\nd: hello\n"
    data, pos = parse_yaml(text)
    assert data == {"a": {"b": [1, 22], "c": {"x": 3}}, "d": "hello"}
    assert pos[("a", "b", 1)] == (2, 10)
    assert pos[("a", "c", "x")] == (3, 10)
    assert pos[("d",)] == (4, 4)
    assert pos.key_positions[("a", "c")] == (3, 3)
    assert pos.locate(("a", "c", "missing")) == (3, 6)
    assert pos.locate(("a", "c"), key=True) == (3, 3)


def test_json_text_is_read_by_the_same_rules(parser: type) -> None:
    doc = {"modelpack": 1, "nodes": [{"name": "a", "args": {"x": 1.5, "y": [1, 2], "z": None, "t": True}}]}
    text = json.dumps(doc, indent=2)
    data, pos = parse_yaml(text)
    assert data == doc
    lines = text.splitlines()
    row = next(i for i, line in enumerate(lines) if '"x"' in line)
    assert pos[("nodes", 0, "args", "x")] == (row + 1, lines[row].index("1.5") + 1)


def test_tab_indented_json_is_read_with_libyaml() -> None:
    if not hasattr(yaml, "CSafeLoader"):
        pytest.skip("libyaml is not available")
    assert parse_yaml('{\n\t"a": [1,\n\t\t2]\n}')[0] == {"a": [1, 2]}


def test_load_spec_tells_paths_from_text(tmp_path: Any) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("a: 1\n")
    assert load_spec(path).data == {"a": 1} and load_spec(path).source == str(path)
    assert load_spec(str(path)).data == {"a": 1}
    assert load_spec("a: 1\n").source == "<string>"
    assert load_spec('{"a": 1}', name="m.mpk:spec.yaml").source == "m.mpk:spec.yaml"
    assert load_spec(b"a: 2").data == {"a": 2}
    with pytest.raises(FileNotFoundError):
        load_spec(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({1: "a"}, "keys must be strings"),
        ({"a": (1, 2)}, "tuple is not plain data"),
        ({"a": [2**64]}, "does not fit in 64 bits"),
        ({"a": {1, 2}}, "set is not plain data"),
    ],
)
def test_check_plain_applies_the_reader_rules_to_python_data(data: Any, message: str) -> None:
    problems = list(check_plain(data))
    assert len(problems) == 1 and message in problems[0][1]


def test_check_plain_stops_cycles() -> None:
    a: list[Any] = []
    a.append(a)
    assert "max_depth" in list(check_plain(a))[0][1]


def test_format_path() -> None:
    assert format_path(("nodes", 3, "args", "out_features")) == "nodes[3].args.out_features"
    assert format_path(("metadata", "a b")) == "metadata['a b']"
    assert format_path((0,)) == "[0]" and format_path(()) == ""


def test_control_characters_are_refused(parser: type) -> None:
    with pytest.raises(SpecError, match=r"control characters .* found U\+0000"):
        parse_yaml("a: \x00\n")


@pytest.mark.parametrize("char", ["\x7f", "\x9b", "\x1b", "\ufffe"])
def test_raw_unprintable_characters_are_refused_alike_by_every_parser(parser: type, char: str) -> None:
    """PyYAML 6.0.3's libyaml took a raw DEL that 6.0.4 and the pure-Python reader refuse: ours decides."""
    with pytest.raises(SpecError, match=rf"found U\+{ord(char):04X}") as info:
        parse_yaml(f"a: 1\nb: \"x{char}\"\n")
    assert (info.value.line, info.value.column) == (2, 6)
    data, _ = parse_yaml(f"a: 1\nb: \"x\\u{ord(char):04x}\"\n")  # the escape is the way to write it
    assert data["b"] == "x" + char


def test_parser_depth_limit_reads_as_ours(parser: type) -> None:
    """libyaml >= 0.2.5 in PyYAML 6.0.4 stops deep flow nesting itself; the message stays modelpack's."""
    with pytest.raises(SpecError, match="nesting deeper than max_depth"):
        parse_yaml("x: " + "[" * 5000 + "]" * 5000 + "\n")
