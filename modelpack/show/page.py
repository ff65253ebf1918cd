"""One self-contained HTML page: the graph model as JSON plus the vendored layout library and our script.

Nothing on the page is fetched: styles, scripts and data are inlined, and a
Content-Security-Policy of ``default-src 'none'`` makes the browser refuse any
request the page might try. The JSON sits in a ``<script type=application/json>``
block with ``<``, ``>`` and ``&`` escaped as ``\\u003c`` etc., so no string from a
model file can close the block or open a tag.
"""

from __future__ import annotations

import html
import json
import re
from functools import cache
from importlib import resources
from typing import Any

from ..tree import float_json

__all__ = ["render_page", "asset"]

_SLOT = re.compile(r"@(TITLE|CSS|DATA|DAGRE|SHOW)@")
_SOURCE_MAP = re.compile(r"^//# sourceMappingURL=.*$", re.MULTILINE)


@cache
def asset(name: str) -> str:
    """A packaged file under ``modelpack/show`` (``assets/show.js``, ``vendor/dagre.min.js``)."""
    parts = name.split("/")
    return resources.files(__package__).joinpath(*parts).read_text(encoding="utf-8")


def _strict(value: Any) -> Any:
    """The data with non-finite floats (a spec's ``-.inf`` pad value) as ``{"$float": "-inf"}``."""
    if isinstance(value, float):
        return float_json(value)
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


def _script_json(model: dict[str, Any]) -> str:
    text = json.dumps(_strict(model), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return (text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _licence_comment() -> str:
    """The vendored library's MIT notice travels with every copy of it (see vendor/VERSIONS.md)."""
    return "/*! @dagrejs/dagre, MIT licence:\n" + asset("vendor/LICENSE-dagre").replace("*/", "* /") + "*/\n"


def render_page(model: dict[str, Any]) -> str:
    """The page's HTML text for a graph model from :func:`modelpack.show.model.graph_model`."""
    slots = {
        "TITLE": html.escape(f"{model['name']} · modelpack show"),
        "CSS": asset("assets/show.css"),
        "DATA": _script_json(model),
        # the source map is not shipped: drop the comment so devtools never asks for it
        "DAGRE": _licence_comment() + _SOURCE_MAP.sub("", asset("vendor/dagre.min.js")),
        "SHOW": asset("assets/show.js"),
    }
    return _SLOT.sub(lambda m: slots[m.group(1)], asset("assets/page.html"))
