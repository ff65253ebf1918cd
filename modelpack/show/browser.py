"""PNG pictures of the page through a headless Chromium (``--screenshot``), for ``--format png``.

The browser is found as ``$MODELPACK_CHROMIUM`` or ``chromium`` / ``chromium-browser`` /
``google-chrome`` on PATH. It loads the page from a private temp folder; the
page's Content-Security-Policy forbids every request, so the screenshot never
touches the network.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from .._fs import atomic_write
from ..errors import MissingDependencyError, ModelPackError

__all__ = ["find_chromium", "screenshot"]

_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_TIMEOUT_S = 120


def find_chromium() -> str | None:
    """The browser to use, or None when there is none."""
    given = os.environ.get("MODELPACK_CHROMIUM")
    if given:
        return given
    return next((found for found in map(shutil.which, _NAMES) if found), None)


def screenshot(page: str, target: str, *, size: tuple[int, int] = (1400, 860)) -> None:
    """Render the page's HTML text in headless Chromium and write a PNG of the window to ``target``."""
    browser = find_chromium()
    if browser is None:
        raise MissingDependencyError("--format png needs a Chromium browser (e.g. `apt-get install chromium`, "
                                     "or set MODELPACK_CHROMIUM); --format svg needs none")
    with tempfile.TemporaryDirectory(prefix="modelpack-show-") as tmp:
        html, png = Path(tmp) / "page.html", Path(tmp) / "page.png"
        html.write_text(page, encoding="utf-8")
        cmd = [browser, "--headless", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={tmp}/profile",
               f"--window-size={size[0]},{size[1]}", f"--screenshot={png}", html.as_uri()]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.insert(1, "--no-sandbox")  # Chromium refuses to start its sandbox as root
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as e:
            raise ModelPackError(f"{browser} took more than {_TIMEOUT_S} s to take the screenshot") from e
        if not png.is_file():
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise ModelPackError(f"{browser} wrote no screenshot (exit {done.returncode}): {' | '.join(tail)}")
        with atomic_write(target) as fd:
            os.write(fd, png.read_bytes())
