"""Spec paths get the same check as pack paths: a FIFO, socket, device or folder is refused at once."""

from __future__ import annotations

import io
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelpack.cli import main
from modelpack.errors import SpecError
from modelpack.spec import validate
from modelpack.spec.yamlio import load_spec

from .guards import guarded


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "model.yaml"
    os.mkfifo(path)  # opening it for reading blocks until a writer comes: none will
    return path


@pytest.fixture
def unix_socket(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "model.yaml"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    yield path
    sock.close()


def _refused(path: Path, what: str) -> None:
    with guarded(), pytest.raises(SpecError, match=f"not a spec file: it is {what}") as info:
        load_spec(path)
    assert info.value.source == str(path)
    with guarded(), pytest.raises(SpecError, match=what):
        validate(path)
    out = io.StringIO()
    with guarded():
        assert main(["validate", str(path)], out=out) == 1
    assert f"not a spec file: it is {what}" in out.getvalue() and "Traceback" not in out.getvalue()


@pytest.mark.budget(10)
def test_fifo_spec_is_refused_without_blocking(fifo: Path) -> None:
    _refused(fifo, "a pipe")


@pytest.mark.budget(10)
def test_socket_spec_is_refused(unix_socket: Path) -> None:
    _refused(unix_socket, "a socket")


@pytest.mark.budget(10)
def test_device_spec_is_refused_before_reading() -> None:
    """/dev/zero would be read for max_spec_bytes before the size check: it is never opened."""
    with guarded(), pytest.raises(SpecError, match="not a spec file: it is a device"):
        load_spec(Path("/dev/zero"))


def test_folder_given_as_spec_path_is_refused(tmp_path: Path) -> None:
    with guarded(), pytest.raises(SpecError, match="not a spec file: it is a folder"):
        load_spec(tmp_path)
