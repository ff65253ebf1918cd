"""``modelpack show``: see a model as an interactive graph page, or as a static SVG/PNG picture.

    modelpack show model.mpk                 # -> model.html: one self-contained, offline page
    modelpack show spec.yaml --format svg    # -> spec.svg: the top-level view, no browser needed
    modelpack show model.mpk --format png -o docs/model.png   # a screenshot of the page (needs chromium)

The page is built from :func:`graph_model` (model.py), rendered by page.py with
the vendored dagre layout (vendor/, see VERSIONS.md); svg.py draws the static
picture; the PNG is a headless-browser screenshot of the page (browser.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TextIO

from .._fs import atomic_write
from .model import SPEC_SUFFIXES, graph_model
from .page import render_page
from .svg import render_svg

__all__ = ["show", "graph_model", "show_command"]

FORMATS = ("html", "svg", "png")


def show(path: str | os.PathLike[str], output: str | os.PathLike[str] | None = None, *,
         format: str = "html") -> str:  # noqa: A002 - mirrors the command line's --format
    """Write the page (``html``), the top-level picture (``svg``) or a screenshot (``png``); return its path.

    ``output`` defaults to the input's name with the format's suffix, in the current folder.
    """
    if format not in FORMATS:
        raise ValueError(f"format {format!r} is not one of {', '.join(FORMATS)}")
    target = os.fspath(output) if output is not None else _default_output(path, format)
    model = graph_model(path)
    if format == "png":
        from .browser import screenshot

        screenshot(render_page(model), target)
    else:
        text = render_page(model) if format == "html" else render_svg(model)
        with atomic_write(target) as fd:
            os.write(fd, text.encode("utf-8"))
    return target


def _default_output(path: str | os.PathLike[str], fmt: str) -> str:
    name = Path(os.fspath(path)).name
    for suffix in (".mpk",) + SPEC_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return f"{name}.{fmt}"


def show_command(path: str, output: str | None, fmt: str, open_it: bool, *, out: TextIO) -> int:
    """``modelpack show``: write the file, say where, optionally open it in the default browser."""
    target = show(path, output, format=fmt)
    out.write(f"wrote {target}\n")
    if open_it:
        import webbrowser

        webbrowser.open(Path(target).resolve().as_uri())
    return 0
