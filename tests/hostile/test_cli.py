"""The command line on hostile files: one line of error, exit 1, nothing from the file reaches the
terminal unescaped (ANSI escape sequences in metadata or tree keys are a terminal-injection vector)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from modelpack.cli import main

from .guards import guarded, write
from .mpkcraft import mpk

ESCAPES = "\x1b[2J\x1b]0;pwned\x07\x1b]8;;http://example.invalid\x1b\\link\x1b]8;;\x1b\\\r\x08\x9b31m"


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    import contextlib

    with contextlib.redirect_stderr(err):
        code = main(list(argv), out=out)
    return code, out.getvalue(), err.getvalue()


def _clean(text: str) -> bool:
    return all(c.isprintable() or c == "\n" for c in text)


def test_inspect_escapes_control_characters_from_the_file(tmp_path: Path) -> None:
    tree = {"a": {"$tensor": "a"}, "b": {"$tensor": "b"}, ESCAPES: 1}
    path = write(tmp_path, mpk(tree=tree, metadata={ESCAPES: ESCAPES, "lone": "\udc80"}).bytes())
    with guarded(tmp_path):
        code, out, err = _run("inspect", str(path))
    assert code == 0 and _clean(out), repr(out)
    assert "\\x1b[2J" in out and "\\udc80" in out
    with guarded(tmp_path):
        code, out, _ = _run("inspect", "--json", str(path))
    assert code == 0 and _clean(out)


@pytest.mark.parametrize("data", [
    mpk(manifest=lambda m: m["tensors"][0].update(name="\x1b[2J")).bytes(),
    mpk(manifest=lambda m: m["tensors"][0].update(dtype="\x1b]0;x\x07")).bytes(),
    mpk(manifest=lambda m: m.update(tree={"$evil\x1b[2J": 1})).bytes(),
    b"PK\x03\x04" + b"\x1b[2J" * 20,
    mpk().bytes()[:-5],
], ids=["name", "dtype", "tag", "junk", "truncated"])
@pytest.mark.parametrize("command", ["inspect", "verify"])
def test_hostile_file_gives_one_clean_error_line(tmp_path: Path, data: bytes, command: str) -> None:
    path = write(tmp_path, data)
    with guarded(tmp_path):
        code, out, err = _run(command, str(path))
    text = out + err
    assert code == 1, text
    assert "Traceback" not in text and _clean(text), repr(text)
    assert len([line for line in text.splitlines() if line.strip()]) == 1, text
