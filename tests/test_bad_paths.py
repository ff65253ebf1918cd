"""A path that is missing, a folder or unreadable reads the same in every verb, API and command line."""

from __future__ import annotations

import builtins
import errno
import io
import os

import pytest

torch = pytest.importorskip("torch")

import modelpack  # noqa: E402
from modelpack import NotAModelPackError, api  # noqa: E402
from modelpack.cli import main  # noqa: E402
from modelpack.diff import diff_report  # noqa: E402
from modelpack.inspect import describe  # noqa: E402
from modelpack.torch.load import load_model, load_weights  # noqa: E402

VERBS = {
    "load": api.load,
    "open": api.open,
    "verify": modelpack.verify,
    "inspect": describe,
    "load_model": load_model,
    "load_weights": lambda p: load_weights(torch.nn.Linear(1, 1), p),
    "diff": lambda p: diff_report(p, p, atol=0.0, out=io.StringIO()),
}
COMMANDS = [["inspect"], ["verify"], ["diff", "{p}"], ["run", "--input", "x.npy", "--output", "o.npy"]]


@pytest.fixture(params=["missing", "folder", "denied"])
def bad(request, tmp_path, monkeypatch):
    """(path, expected error class, its str, the command line's text) for one kind of bad path."""
    path = str(tmp_path / "m.mpk")
    if request.param == "missing":
        return path, FileNotFoundError, f"[Errno 2] No such file or directory: '{path}'", \
            f"{path}: No such file or directory"
    if request.param == "folder":
        os.mkdir(path)
        return path, NotAModelPackError, f"{path}: not a .mpk file: it is a folder", \
            f"{path}: not a .mpk file: it is a folder"
    modelpack.save({"w": torch.ones(2)}, path)
    os.chmod(path, 0)
    if os.geteuid() == 0:  # root reads anything: refuse as the kernel does for everyone else
        _deny(monkeypatch, path)
    return path, PermissionError, f"[Errno 13] Permission denied: '{path}'", f"{path}: Permission denied"


def _deny(monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    def guard(opener):
        def wrapped(file, *args, **kwargs):
            if isinstance(file, (str, os.PathLike)) and os.fspath(file) == path:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
            return opener(file, *args, **kwargs)
        return wrapped

    monkeypatch.setattr(os, "open", guard(os.open))
    monkeypatch.setattr(builtins, "open", guard(builtins.open))


def test_every_verb_raises_the_same_error(bad):
    path, cls, text, _ = bad
    for name, verb in VERBS.items():
        with pytest.raises(cls) as info:
            verb(path)
        assert str(info.value) == text, name


def test_validate_of_a_missing_or_unreadable_spec_reads_alike(bad, tmp_path):
    path, cls, text, _ = bad
    if cls is NotAModelPackError:
        pytest.skip("a folder is searched for specs (see test_cli_misc)")
    with pytest.raises(cls, match="^" + text.replace("[", r"\[").replace("]", r"\]") + "$"):
        modelpack.validate(path)


def test_every_command_prints_the_same_line(bad, capsys):
    path, _, _, line = bad
    for command in COMMANDS:
        argv = [command[0], path, *[a.format(p=path) for a in command[1:]]]
        out = io.StringIO()
        assert main(argv, out=out) == 1, argv
        printed = out.getvalue() + capsys.readouterr().err
        expected = f"{path}: FAILED: {line.removeprefix(path + ': ')}" if command[0] == "verify" else \
            f"modelpack: error: {line}"
        assert printed == expected + "\n", argv
    out = io.StringIO()
    if not os.path.isdir(path):
        assert main(["validate", path], out=out) == 1 and out.getvalue() == line + "\n"
