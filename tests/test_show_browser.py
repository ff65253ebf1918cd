"""`modelpack show` pages in a real headless Chromium, driven by Playwright.

Needs the `playwright` Python package and a Chromium on the machine (Debian's
`chromium`; Playwright's own browser downloads are never used). Screenshots of
each model land in tests/artifacts/ (git-ignored) for people to look at.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import pytest

from modelpack.show import graph_model, show
from modelpack.show.browser import find_chromium
from modelpack.show.page import render_page

sync_api = pytest.importorskip("playwright.sync_api", reason="browser tests need `pip install playwright`")
CHROMIUM = find_chromium()
if CHROMIUM is None:
    pytest.skip("browser tests need Chromium (`apt-get install chromium`, or set MODELPACK_CHROMIUM)",
                allow_module_level=True)
pytest.importorskip("torch")

import show_specs  # noqa: E402 - after the skips: tests/ is on sys.path under pytest

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
MODELS = {
    "resnet50": show_specs.resnet50(),
    "vit": show_specs.vit(layers=4, dim=64, heads=4, mlp=128, patch=8, image=32, classes=10),
    "llama": show_specs.llama(layers=4, dim=64, heads=4, ffn=128, vocab=100),
}


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, Any]]]:
    """name -> (page path, its graph model), each built once for the module."""
    folder = tmp_path_factory.mktemp("show")
    out = {}
    for name, spec in MODELS.items():
        yaml_path = folder / f"{name}.yaml"
        yaml_path.write_text(show_specs.to_yaml(spec))
        with warnings.catch_warnings():  # shapes may not propagate (a warning says why); the page is the subject
            warnings.simplefilter("ignore", RuntimeWarning)
            model = graph_model(yaml_path)
        page = folder / f"{name}.html"
        page.write_text(render_page(model), encoding="utf-8")
        out[name] = (page, model)
    return out


@pytest.fixture(scope="module")
def browser():
    args = ["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=args)
        yield b
        b.close()


class Opened:
    """A page loaded from file:// with every console message, page error and request recorded."""

    def __init__(self, browser: Any, path: Path) -> None:
        self.page = browser.new_page(viewport={"width": 1400, "height": 860})
        self.messages: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: self.messages.append(f"{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.messages.append(f"pageerror: {e}"))
        self.page.on("dialog", lambda d: (self.messages.append(f"dialog: {d.message}"), d.dismiss()))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.url = path.resolve().as_uri()
        self.page.goto(self.url)
        self.page.wait_for_function("window.modelpackShow && window.modelpackShow.ready", timeout=10_000)

    def names(self, selector: str) -> list[str]:
        return self.page.eval_on_selector_all(selector, "els => els.map(e => e.dataset.name)")


@pytest.fixture
def opened(browser):
    made: list[Opened] = []

    def open_(path: Path) -> Opened:
        made.append(Opened(browser, path))
        return made[-1]

    yield open_
    for o in made:
        o.page.close()


@pytest.mark.parametrize("name", list(MODELS))
def test_page_loads_offline_with_no_errors_and_no_requests(pages, opened, name: str) -> None:
    path, model = pages[name]
    o = opened(path)
    assert o.messages == []
    assert o.requests == [o.url]  # the page itself, nothing else
    assert o.page.locator(".node").count() > 0
    assert o.page.locator("#mp-side h1").text_content() == model["name"]
    ARTIFACTS.mkdir(exist_ok=True)
    o.page.screenshot(path=str(ARTIFACTS / f"show_{name}.png"))


@pytest.mark.parametrize("name", list(MODELS))
def test_expanded_the_dom_has_one_group_per_module_and_every_node(pages, opened, name: str) -> None:
    path, model = pages[name]
    o = opened(path)
    o.page.click("#mp-expand-all")
    groups = o.names(".group")
    assert sorted(groups) == sorted(g["name"] for g in model["groups"])
    assert o.page.locator(".group.collapsed").count() == 0
    assert sorted(o.names(".node")) == sorted(n["name"] for n in model["nodes"])
    assert o.page.locator("path.edge").count() >= len(model["nodes"]) - 2
    o.page.click("#mp-collapse-all")
    top = {g["name"] for g in model["groups"] if g["parent"] < 0}
    assert set(o.names(".group")) == top
    assert o.messages == []


def test_clicking_a_node_shows_its_arguments_parameters_and_spec_line(pages, opened) -> None:
    path, model = pages["resnet50"]
    o = opened(path)
    o.page.click('.node[data-name="conv1"]')
    info = o.page.locator("#mp-info")
    assert info.locator("h3").text_content() == "conv1"
    args = info.locator("pre.args").text_content()
    assert '"kernel_size": 7' in args and '"out_channels": 64' in args
    assert "weight[64, 3, 7, 7]float32" in info.locator("table.params").text_content()
    line = next(n["line"] for n in model["nodes"] if n["name"] == "conv1")
    assert f"{model['source']}:{line}" in info.locator("table.facts").text_content()
    assert o.page.locator('.node.sel[data-name="conv1"]').count() == 1


def test_search_finds_a_node_by_name_and_reveals_it(pages, opened) -> None:
    path, _ = pages["llama"]
    o = opened(path)
    target = "model.layers.2.self_attn.q_proj"
    assert o.page.locator(f'.node[data-name="{target}"]').count() == 0  # inside a collapsed layer
    o.page.fill("#mp-search", "layers.2.self_attn.q_pro")
    assert o.page.locator("#mp-results div").first.text_content().startswith(target)
    o.page.press("#mp-search", "Enter")
    assert o.page.locator(f'.node.sel[data-name="{target}"]').count() == 1
    assert o.page.locator("#mp-info h3").text_content() == target
    assert o.page.locator('.group.expanded[data-name="model.layers.2"]').count() == 1


def test_a_group_expands_and_collapses_on_click(pages, opened) -> None:
    path, _ = pages["resnet50"]
    o = opened(path)
    group, inner = '.group[data-name="layer2.0"]', '.node[data-name="layer2.0.conv1"]'
    assert o.page.locator(group).get_attribute("class") == "group collapsed"
    assert o.page.locator(inner).count() == 0
    o.page.click(group + " > .box")
    assert o.page.locator(group).get_attribute("class").startswith("group expanded")
    assert o.page.locator(inner).count() == 1
    assert o.page.locator('.group.collapsed[data-name="layer2.0.downsample"]').count() == 1
    o.page.click(group + " > .head")
    assert o.page.locator(group).get_attribute("class").startswith("group collapsed")
    assert o.page.locator(inner).count() == 0
    assert o.page.locator('.group[data-name="layer2.0.downsample"]').count() == 0
    assert o.messages == []


def test_hostile_metadata_is_shown_as_text(tmp_path: Path, opened) -> None:
    import numpy as np

    from modelpack import api, tree

    hostile = '</script><img src=x onerror="document.title=\'pwned\'"><script>alert(1)</script>'
    spec = "modelpack: 1\ninputs:\n  x: {shape: [batch, 2]}\nnodes:\n  - {name: fc, layer: Linear, " \
           "args: {in_features: 2, out_features: 1}}\noutputs: [fc]\n"
    tree_json, leaves = tree.encode({"fc.weight": np.ones((1, 2), np.float32), "fc.bias": np.zeros(1, np.float32)})
    api.write_pack(tmp_path / "h.mpk", tree_json, leaves, spec_text=spec, metadata={"note": hostile})
    o = opened(Path(show(tmp_path / "h.mpk", tmp_path / "h.html")))
    assert hostile in o.page.locator("#mp-metadata").text_content()
    assert "pwned" not in o.page.title() and o.messages == []
    assert o.requests == [o.url]


def test_png_is_a_screenshot_of_the_page(pages, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = show(Path(pages["vit"][0]).with_suffix(".yaml"), tmp_path / "vit.png", format="png")
    data = Path(out).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
