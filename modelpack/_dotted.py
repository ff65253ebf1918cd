"""Dotted names (``layer1.0.conv1``) as a tree of their parts, for prefix questions in linear time.

Asking "is some prefix of this name a known name?" by slicing the name at each dot costs its
length times its parts, which a file can make quadratic with one long name of many short
parts. A tree of parts answers it with one dict lookup per part, and counts the distinct
prefixes (the namespace modules a build creates) as names are added.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = ["DottedTree"]

_END = None  # the key marking "a name ends here" (parts are strings, so it never collides)


class DottedTree:
    """Names added by their dotted parts, each with a value."""

    def __init__(self) -> None:
        self.root: dict[Any, Any] = {}
        self.nodes = 0  # distinct non-empty prefixes of every name added

    def add(self, name: str, value: Any = True) -> int:
        """Add ``name``; return how many of its proper prefixes (``a``, ``a.b`` for ``a.b.c``) are new."""
        node, new = self.root, 0
        parts = name.split(".")
        for k, part in enumerate(parts, 1):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
                self.nodes += 1
                new += k < len(parts)
            node = child
        node[_END] = value
        return new

    def prefixes(self, name: str) -> Iterator[tuple[int, Any]]:
        """``(k, value)`` for each added name equal to the first ``k`` parts of ``name`` (k < all
        parts), shortest first."""
        node = self.root
        parts = name.split(".")
        for k, part in enumerate(parts[:-1], 1):
            node = node.get(part)
            if node is None:
                return
            if _END in node:
                yield k, node[_END]
