"""The strict YAML reader: plain JSON-like data plus the line:column of every value.

Built on PyYAML's event stream (libyaml's C parser when present, else the pure
Python one), so we construct values ourselves and refuse, at the event that
carries them, everything a spec never needs and an attacker might use: tags
other than the standard str/int/float/bool/null/seq/map, anchors and aliases
(billion laughs), merge keys, duplicate and non-string keys, several documents,
oversize input and deep nesting. Scalars follow the YAML 1.2 core schema minus
its ambiguities: ``yes``/``no``/``on``/``off``, ``010``, ``0x1F``, ``1_000`` and
``12:30`` stay strings; integers are plain decimal and fit in 64 bits; floats
fit in 64 bits, and the non-finite ones are written as YAML writes them
(``.inf``, ``-.inf``, ``.nan``: a pad or mask value), never as the JSON-ish words
``Infinity``/``NaN`` or an overflowing ``1e999``. Where a non-finite float may
stand is the schema's business: ints and sizes refuse it. JSON text is YAML and
goes through the same reader.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Iterator
from typing import Any

import yaml

from .. import limits
from .._paths import open_regular
from ..errors import SpecError

__all__ = ["Path", "Positions", "Spec", "load_spec", "parse_yaml", "check_plain", "format_path", "YAML_NONFINITE"]

Path = tuple[str | int, ...]

# libyaml is ~8x faster and gives the same events and marks (tests run both).
_PARSER: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_STD = "tag:yaml.org,2002:"
_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)\Z")
_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|(?:0|[1-9][0-9]*)(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?\Z")
# YAML 1.2's spellings of the non-finite floats, and the words other languages use for them (refused)
_NONFINITE = re.compile(r"(?:[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))\Z")
_FOREIGN_NONFINITE = re.compile(r"(?:[-+]?Infinity|NaN)\Z")
# how the writer spells them (repr -> YAML), and how messages show them
YAML_NONFINITE = {"inf": ".inf", "-inf": "-.inf", "nan": ".nan"}
_NULLS = frozenset({"", "~", "null", "Null", "NULL"})
_BOOLS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_INT64 = 1 << 63
# Characters YAML 1.2 refuses raw in a stream (c-printable's complement): C0 but tab/LF/CR, DEL,
# C1 but NEL, surrogates, U+FFFE/U+FFFF. Checked here so every PyYAML version and both its parsers
# refuse the same text with the same message; inside double quotes they can be written as escapes.
_UNPRINTABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f\ud800-\udfff\ufffe\uffff]")
_PLAIN_SCALARS = (str, int, float, bool, type(None))


class Positions(dict):  # type: ignore[type-arg]
    """path -> (line, column) of each value, 1-based; ``key_positions`` for mapping keys."""

    def __init__(self) -> None:
        super().__init__()
        self.key_positions: dict[Path, tuple[int, int]] = {}

    def locate(self, path: Path, *, key: bool = False) -> tuple[int, int] | None:
        """Where ``path`` (or its nearest located ancestor) starts."""
        path = tuple(path)
        if key and path in self.key_positions:
            return self.key_positions[path]
        while True:
            if path in self:
                return self[path]  # type: ignore[no-any-return]
            if not path:
                return None
            path = path[:-1]


@dataclasses.dataclass(frozen=True)
class Spec:
    """A loaded spec document: its data, where each value sits, and the file it came from."""

    data: Any
    positions: Positions
    source: str | None = None


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def format_path(path: Path) -> str:
    """``("nodes", 3, "args", "out_features")`` -> ``nodes[3].args.out_features``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENT.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


# ----------------------------------------------------------------------------- reading


def load_spec(source: str | os.PathLike[str] | bytes, *, name: str | None = None) -> Spec:
    """Read a spec from a path, or from YAML/JSON text.

    ``bytes`` and a ``str`` holding a newline or starting with ``{`` are text
    (reported as ``name``, default ``<string>``); any other ``str`` or a PathLike
    is a file path.
    """
    if isinstance(source, (str, bytes)) and _is_text(source):
        label = name or "<string>"
        data, positions = parse_yaml(source, source=label)
        return Spec(data, positions, label)
    path = os.fsdecode(source)
    label = name or path
    data, positions = parse_yaml(_read_capped(path), source=label)
    return Spec(data, positions, label)


def _is_text(source: str | bytes) -> bool:
    return isinstance(source, bytes) or "\n" in source or source.lstrip()[:1] == "{"


def _read_capped(path: str) -> bytes:
    """Read at most max_spec_bytes (+1 to detect more), never the whole of a huge file."""
    cap = limits.current().max_spec_bytes
    with os.fdopen(open_regular(path, SpecError, "spec file"), "rb") as f:
        raw = f.read(cap + 1)
    _check_size(len(raw), path)
    return raw


def _check_size(size: int, source: str | None) -> None:
    cap = limits.current().max_spec_bytes
    if size > cap:
        raise SpecError(f"spec is larger than max_spec_bytes={cap:,}; if the file is trusted, raise it "
                        "with modelpack.limits.raised(max_spec_bytes=...)", source=source)


def _decode(text: str | bytes, source: str | None) -> str:
    if isinstance(text, str):
        if len(text) > limits.current().max_spec_bytes // 4:  # cheap bound before encoding
            _check_size(len(text.encode("utf-8", "surrogatepass")), source)
        return text
    _check_size(len(text), source)
    try:
        return text.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        raise SpecError(f"spec is not UTF-8 text (byte {e.start}: {e.reason})", source=source) from e


def parse_yaml(text: str | bytes, *, source: str | None = None) -> tuple[Any, Positions]:
    """Parse one YAML (or JSON) document strictly; SpecError with line:column on the first problem."""
    builder = _Builder(source)
    decoded = _decode(text, source)
    _check_printable(decoded, source)
    try:
        parser = _PARSER(decoded)  # the pure-Python reader checks characters here already
        try:
            data = builder.document(iter(parser.get_event, None))  # events until the parser has none
        finally:
            parser.dispose()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        problem = e.problem or e.context
        if "nesting depth" in str(problem):  # libyaml's own depth cap (PyYAML >= 6.0.4) is above ours
            problem = f"nesting deeper than max_depth={builder.max_depth}"
        raise SpecError(f"YAML syntax error: {problem}", source=source, line=line, column=col) from e
    except yaml.YAMLError as e:
        raise SpecError(f"YAML error: {e}", source=source) from e
    return data, builder.positions


def _check_printable(text: str, source: str | None) -> None:
    """Refuse characters YAML cannot carry raw, with line:column and the fix."""
    bad = _UNPRINTABLE.search(text)
    if bad is None:
        return
    start = bad.start()
    line = text.count("\n", 0, start) + 1
    column = start - (text.rfind("\n", 0, start) + 1) + 1
    code = ord(bad.group())
    raise SpecError(f"control characters (and non-characters) are not allowed raw in YAML text: found "
                    f"U+{code:04X}; inside a double-quoted string write it as the escape \"\\u{code:04x}\"",
                    source=source, line=line, column=column)


class _Builder:
    """Turns parser events into plain data, recording positions and refusing the unsafe."""

    def __init__(self, source: str | None) -> None:
        self.source = source
        self.positions = Positions()
        self.max_depth = limits.current().max_depth

    def fail(self, message: str, event: Any, path: Path = ()) -> SpecError:
        mark = event.start_mark
        where = format_path(path) or None
        return SpecError(message, source=self.source, where=where, line=mark.line + 1, column=mark.column + 1)

    def document(self, events: Iterator[Any]) -> Any:
        next(events)  # StreamStart
        start = next(events)
        if isinstance(start, yaml.StreamEndEvent):
            raise self.fail("the spec is empty", start)
        data = self.node(next(events), events, (), 1)
        next(events)  # DocumentEnd
        extra = next(events)
        if not isinstance(extra, yaml.StreamEndEvent):
            raise self.fail("a spec is one YAML document; found a second one ('---')", extra)
        return data

    def node(self, event: Any, events: Iterator[Any], path: Path, depth: int) -> Any:
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise self.fail("anchors and aliases (&name, *name) are not allowed; write the value out", event,
                            path)
        self.positions[path] = (event.start_mark.line + 1, event.start_mark.column + 1)
        if isinstance(event, yaml.ScalarEvent):
            return self.scalar(event, path)
        if depth > self.max_depth:
            raise self.fail(f"nesting deeper than max_depth={self.max_depth}", event)
        if isinstance(event, yaml.SequenceStartEvent):
            self.check_tag(event, "seq", path)
            return self.sequence(events, path, depth)
        self.check_tag(event, "map", path)
        return self.mapping(events, path, depth)

    def check_tag(self, event: Any, expected: str, path: Path) -> None:
        if event.tag not in (None, "!", _STD + expected):
            raise self.fail(_tag_message(event.tag), event, path)

    def sequence(self, events: Iterator[Any], path: Path, depth: int) -> list[Any]:
        items: list[Any] = []
        for event in events:
            if isinstance(event, yaml.SequenceEndEvent):
                return items
            items.append(self.node(event, events, path + (len(items),), depth + 1))
        raise AssertionError("unreachable: the parser closes every sequence")

    def mapping(self, events: Iterator[Any], path: Path, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for event in events:
            if isinstance(event, yaml.MappingEndEvent):
                return out
            key = self.key(event, path)
            where = path + (key,)
            if key in out:
                first = self.positions.key_positions[where][0]
                raise self.fail(f"duplicate key {key!r} (first at line {first})", event, where)
            self.positions.key_positions[where] = (event.start_mark.line + 1, event.start_mark.column + 1)
            out[key] = self.node(next(events), events, where, depth + 1)
        raise AssertionError("unreachable: the parser closes every mapping")

    def key(self, event: Any, path: Path) -> str:
        if not isinstance(event, yaml.ScalarEvent) or getattr(event, "anchor", None) is not None:
            raise self.fail("mapping keys must be plain strings", event, path)
        if event.tag is None and event.implicit[0] and event.value == "<<":
            raise self.fail("merge keys (<<) are not allowed; write the keys out", event, path)
        key = self.scalar(event, path)
        if not isinstance(key, str):
            raise self.fail(f"mapping keys must be strings; got {event.value} ({_kind(key)}), quote it",
                            event, path)
        return key

    def scalar(self, event: Any, path: Path) -> Any:
        text, tag = event.value, event.tag
        if tag == "!" or (tag is None and not event.implicit[0]):
            return self.text(text, event, path)
        try:
            return _resolve(text, tag)
        except ValueError as e:
            raise self.fail(str(e), event, path) from None

    def text(self, text: str, event: Any, path: Path) -> str:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise self.fail("string holds a lone surrogate (\\ud800-\\udfff); not valid text", event,
                            path) from None
        return text


def _tag_message(tag: str) -> str:
    shown = "!!" + tag[len(_STD):] if tag.startswith(_STD) else tag
    return (f"tag {shown!r} is not allowed: a spec is plain data (strings, numbers, true/false, null, "
            "lists, mappings)")


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _resolve(text: str, tag: str | None) -> Any:
    """A plain (tag None) or explicitly tagged scalar -> value; ValueError explains a refusal."""
    if tag is None:
        return _resolve_plain(text)
    kind = tag[len(_STD):] if tag.startswith(_STD) else None
    if kind == "str":
        return text
    if kind == "int" and _INT.match(text):
        return _int(text)
    if kind == "float" and (_FLOAT.match(text) or _NONFINITE.match(text) or _FOREIGN_NONFINITE.match(text)):
        return _float(text)
    if kind == "bool" and text in _BOOLS:
        return _BOOLS[text]
    if kind == "null" and text in _NULLS:
        return None
    if kind in ("int", "float", "bool", "null"):
        raise ValueError(f"{text!r} is not a valid !!{kind}")
    raise ValueError(_tag_message(tag))


_SPECIAL: dict[str, Any] = {**dict.fromkeys(_NULLS), **_BOOLS}
_NUMERIC_START = frozenset("+-.0123456789")


def _resolve_plain(text: str) -> Any:
    if text in _SPECIAL:
        return _SPECIAL[text]
    if text[:1] not in _NUMERIC_START and text not in ("NaN", "Infinity"):
        return text  # the common case, a word: no pattern can match
    if _INT.match(text):
        return _int(text)
    if _FLOAT.match(text) or _NONFINITE.match(text) or _FOREIGN_NONFINITE.match(text):
        return _float(text)
    return text


def _int(text: str) -> int:
    if len(text.lstrip("+-")) > 19 or not -_INT64 <= int(text) < _INT64:
        raise ValueError(f"integer {text} does not fit in 64 bits")
    return int(text)


def _float(text: str) -> float:
    """A float literal; a NaN always reads as the canonical quiet NaN (no sign, no payload)."""
    if _FOREIGN_NONFINITE.match(text):
        raise ValueError(f"{text} is not a YAML number: write .inf, -.inf or .nan for a non-finite float "
                         "(or quote it for a string)")
    if _NONFINITE.match(text):
        if text.lower() == ".nan":
            return math.nan
        return -math.inf if text.startswith("-") else math.inf
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} does not fit in a 64-bit float; write .inf or -.inf for an infinity")
    return value


# ----------------------------------------------------------------------------- Python data


def check_plain(data: Any, path: Path = (), depth: int = 1) -> Iterator[tuple[Path, str]]:
    """The reader's rules applied to data built in Python: JSON types only, str keys, 64-bit ints."""
    cap = limits.current().max_depth
    if depth > cap:
        yield path, f"nesting deeper than max_depth={cap}"
    elif isinstance(data, dict):
        for key, value in data.items():
            if isinstance(key, str):
                yield from check_plain(value, path + (key,), depth + 1)
            else:
                yield path, f"mapping keys must be strings; got {key!r} ({_kind(key)})"
    elif isinstance(data, list):
        for i, item in enumerate(data):
            yield from check_plain(item, path + (i,), depth + 1)
    elif not isinstance(data, _PLAIN_SCALARS):
        yield path, f"{type(data).__name__} is not plain data; use str, int, float, bool, None, list or dict"
    elif isinstance(data, int) and not isinstance(data, bool) and not -_INT64 <= data < _INT64:
        yield path, f"integer {data} does not fit in 64 bits"
