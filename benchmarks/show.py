"""Time to interactive of `modelpack show` pages in headless Chromium: ResNet-50, ViT-H/14, Llama 32 layers.

Run by hand (needs torch, playwright and a Chromium: `apt-get install chromium`):

    python benchmarks/show.py [--runs 5]

Per model: nodes and modules, page size, the Python side (spec -> graph model ->
HTML, shape propagation included), then in the browser the median over runs of
the time from navigation start to a drawn, clickable graph (`interactive`), and
of "Expand all" (every module laid out and drawn at once). The last column is
the ratio expand-all / first view: what laying out only the visible level saves.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import show_specs  # noqa: E402

from modelpack.show import graph_model  # noqa: E402
from modelpack.show.browser import find_chromium  # noqa: E402
from modelpack.show.page import render_page  # noqa: E402

MODELS = {
    "ResNet-50": show_specs.resnet50,
    "ViT-H/14": show_specs.vit,
    "Llama 32 layers (7B shapes)": show_specs.llama,
}


def build(folder: Path, name: str, make) -> tuple[Path, dict, float]:
    spec = folder / (name.split()[0].replace("/", "_") + ".yaml")
    spec.write_text(show_specs.to_yaml(make()))
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        model = graph_model(spec)
    page = spec.with_suffix(".html")
    page.write_text(render_page(model), encoding="utf-8")
    return page, model, time.perf_counter() - t


def measure(browser, page: Path) -> tuple[float, float]:
    tab = browser.new_page(viewport={"width": 1400, "height": 860})
    try:
        tab.goto(page.resolve().as_uri())
        tab.wait_for_function("window.modelpackShow && window.modelpackShow.ready")
        ready = tab.evaluate("window.modelpackShow.stats.interactive")
        expand = tab.evaluate("(() => { const t = performance.now(); window.modelpackShow.expandAll(); "
                              "return performance.now() - t; })()")
        return ready, expand
    finally:
        tab.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    runs = ap.parse_args().runs
    from playwright.sync_api import sync_playwright

    chromium = find_chromium()
    if chromium is None:
        sys.exit("needs Chromium (apt-get install chromium, or set MODELPACK_CHROMIUM)")
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    rows = []
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=args)
        for name, make in MODELS.items():
            page, model, py_s = build(Path(tmp), name, make)
            measure(browser, page)  # warm the browser's caches once
            times = [measure(browser, page) for _ in range(runs)]
            ready = statistics.median(t[0] for t in times)
            expand = statistics.median(t[1] for t in times)
            nodes = sum(n["kind"] in ("layer", "op") for n in model["nodes"])
            rows.append((name, nodes, len(model["groups"]), page.stat().st_size / 1024, py_s, ready, expand))
        browser.close()
    print(f"\nChromium headless, {runs} runs, median\n")
    print("| model | nodes | modules | page KiB | python s | interactive ms | expand all ms | expand all / first view |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, nodes, groups, kib, py_s, ready, expand in rows:
        print(f"| {name} | {nodes} | {groups} | {kib:.0f} | {py_s:.2f} | {ready:.0f} | {expand:.0f} | "
              f"{expand / ready:.2f}x |")


if __name__ == "__main__":
    main()
