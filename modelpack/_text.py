"""Strings from files made safe for a terminal: the one escaping function everything printed goes through."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TextIO

__all__ = ["printable", "EscapingWriter"]


_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(c: str) -> str:
    if c in _SHORT:
        return _SHORT[c]
    code = ord(c)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(value: Any, *, keep: str = "") -> str:
    """``str(value)`` with every character a terminal could act on written as a Python-style escape.

    That is everything ``str.isprintable`` refuses: C0 and C1 controls (ESC, CSI
    U+009B), bidi overrides and isolates (U+202A-202E, U+2066-2069) and other
    format characters, line/paragraph separators, and lone surrogates (which
    could not even be encoded). Characters in ``keep`` (e.g. the ``\\n`` of our
    own output) pass through.
    """
    text = str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c in keep else _escape(c) for c in text)


class EscapingWriter:
    """A text stream that escapes whatever is written to it (newlines kept), for the CLI's output.

    Wrapping the stream escapes every string at the one place all output passes,
    so no command can print a string from a file raw by forgetting to call
    :func:`printable`.
    """

    def __init__(self, target: TextIO) -> None:
        self._target = target

    def write(self, text: str) -> int:
        self._target.write(printable(text, keep="\n"))
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:  # flush, isatty, fileno, encoding...
        return getattr(self._target, name)
