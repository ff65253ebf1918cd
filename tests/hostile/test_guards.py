"""The guards themselves: each forbidden call inside guarded() fails, and a hang is cut short."""

from __future__ import annotations

import builtins
import importlib
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from .guards import CaseTimeout, GuardViolation, guarded, take_violations


@pytest.mark.parametrize("action", [
    lambda p: os.system("true"),
    lambda p: os.popen("true"),
    lambda p: subprocess.run(["true"]),
    lambda p: socket.socket(),
    lambda p: socket.create_connection(("127.0.0.1", 9)),
    lambda p: builtins.open(p / "out.txt", "w"),
    lambda p: open(p / "out.txt", "ab"),
    lambda p: os.open(p / "out.txt", os.O_WRONLY | os.O_CREAT),
    lambda p: open("/etc/passwd"),
    lambda p: os.open("/etc/hostname", os.O_RDONLY),
    lambda p: os.remove(p / "x"),
    lambda p: os.truncate(p / "x", 0),
], ids=["system", "popen", "subprocess", "socket", "connect", "open-w", "open-a", "os-open-w", "read-etc",
        "os-open-etc", "remove", "truncate"])
def test_forbidden_call_inside_guard_fails(tmp_path: Path, action) -> None:
    (tmp_path / "x").write_bytes(b"x")
    with guarded(tmp_path), pytest.raises(GuardViolation):
        action(tmp_path)
    assert take_violations()


def test_guard_allows_reading_the_case_folder(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"ok")
    with guarded(tmp_path):
        assert (tmp_path / "f").read_bytes() == b"ok"
        os.close(os.open(tmp_path / "f", os.O_RDONLY))


def test_import_module_called_by_modelpack_code_is_policed() -> None:
    """A name from a file reaching importlib through modelpack code is caught; modelpack's own lazy names pass."""
    namespace = {"__name__": "modelpack.fake", "importlib": importlib}
    exec("def imp(name):\n    return importlib.import_module(name)\n", namespace)
    with guarded():
        assert namespace["imp"]("modelpack.api").__name__ == "modelpack.api"
        with pytest.raises(GuardViolation):
            namespace["imp"]("os")
    assert take_violations() == ["importlib.import_module('os') called by modelpack"]


def test_swallowed_violation_still_fails_at_teardown(tmp_path: Path) -> None:
    with guarded(tmp_path):
        try:
            os.system("true")
        except BaseException:  # the code under test swallowing it
            pass
    assert take_violations()  # (the fixture would fail this test had we not taken them)


@pytest.mark.budget(1)
def test_hang_is_cut_by_the_budget() -> None:
    with pytest.raises(CaseTimeout):
        time.sleep(5)
