"""Guards and helpers for the hostile suite: no code execution, no process, socket, import or file escape, no hang.

Every test here runs with an autouse fixture that

* wraps ``os.system``/``os.popen``/exec/spawn/fork, ``subprocess.Popen``, ``socket.socket``,
  ``importlib.import_module``, ``builtins.open``/``io.open`` and ``os.open`` so that, inside a
  ``guarded()`` block (where the readers run on a hostile file), any such call fails the test: it
  raises :class:`GuardViolation` (a BaseException, so no ``except Exception`` in the code under
  test can swallow it) and is recorded, so the test also fails at teardown;
* allows, inside the block, only *reads* of files under the test's tmp folder, the package and
  the Python installation (lazy imports), and ``import_module`` of ``modelpack.*`` names when
  the caller is modelpack code (third-party packages may import their own parts lazily);
* arms ``SIGALRM`` with a per-test time budget (``@pytest.mark.budget(seconds)``, default
  ``DEFAULT_BUDGET``), so a hang fails the test instead of the run.

Test setup (writing the hostile files) runs outside ``guarded()`` and is not policed.
"""

from __future__ import annotations

import builtins
import contextlib
import importlib
import io
import os
import signal
import site
import socket
import subprocess
import sys
import sysconfig
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import modelpack
from modelpack import api, inspect
from modelpack.errors import ModelPackError

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PACKAGE = ROOT / "modelpack"
DEFAULT_BUDGET = 20.0  # seconds per test; generous for a shared 2-core machine

# Import what the readers import lazily, so first-import side effects happen outside the guard.
# torch._dynamo: torch imports it lazily on the first decomposed op (shape inference in
# inspect/validate), and its import creates a cache folder (/tmp/torchinductor_<user>): a write
# we accept as torch's own, once per process, reported in SECURITY.md.
for _name in ("torch._dynamo", "modelpack.torch.tensors", "modelpack.spec", "modelpack.torch.load", "modelpack.torch.build",
              "modelpack.torch.shapes", "modelpack.checkpoint", "tqdm"):
    with contextlib.suppress(ImportError):
        importlib.import_module(_name)


class GuardViolation(BaseException):
    """The code under test tried something a loader must never do."""


class CaseTimeout(BaseException):
    """A case ran past its time budget (a hang or quadratic blow-up)."""


class _State:
    active = 0
    roots: tuple[str, ...] = ()
    violations: list[str] = []


_STATE = _State()
_PY_ROOTS = tuple(
    str(Path(p).resolve())
    for p in {sys.prefix, sys.base_prefix, sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"],
              sysconfig.get_paths()["platlib"], *site.getsitepackages(), site.getusersitepackages()}
    if p
)


def take_violations() -> list[str]:
    """Return and forget the violations recorded so far (for the guards' own tests)."""
    taken, _STATE.violations = _STATE.violations, []
    return taken


def _violate(what: str) -> None:
    _STATE.violations.append(what)
    raise GuardViolation(what)


@contextlib.contextmanager
def guarded(*allow: str | os.PathLike[str]) -> Iterator[None]:
    """Police the block: only reads under the allowed roots, no process/socket/import escapes."""
    saved = _STATE.roots
    _STATE.roots = saved + tuple(str(Path(p).resolve()) for p in allow)
    _STATE.active += 1
    try:
        yield
    finally:
        _STATE.active -= 1
        _STATE.roots = saved


_RESOLVED: dict[str, str] = {}  # path -> realpath, cleared per test (the sweep opens one path thousands of times)


def _path_allowed(path: Any) -> bool:
    if isinstance(path, int):  # an fd the caller already holds
        return True
    try:
        name = os.fsdecode(path)
        resolved = _RESOLVED.get(name) or _RESOLVED.setdefault(name, os.path.realpath(name))
    except (TypeError, ValueError, OSError):
        return False
    roots = _STATE.roots + (str(PACKAGE), str(ROOT / "schemas")) + _PY_ROOTS
    return any(resolved == r or resolved.startswith(r + os.sep) for r in roots)


def _caller_is_modelpack(depth: int = 2) -> bool:
    frame = sys._getframe(depth)
    return frame.f_globals.get("__name__", "").split(".")[0] == "modelpack"


def _wrap_open(original: Callable[..., Any]) -> Callable[..., Any]:
    def guarded_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if _STATE.active:
            if any(c in str(mode) for c in "wax+"):
                _violate(f"open({file!r}, {mode!r}) writes")
            if not _path_allowed(file):
                _violate(f"open({file!r}) reads outside the allowed folders")
        return original(file, mode, *args, **kwargs)

    return guarded_open


def _wrap_os_open(original: Callable[..., Any]) -> Callable[..., Any]:
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def guarded_os_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> Any:
        if _STATE.active:
            if flags & write_flags:
                _violate(f"os.open({path!r}, {flags:#o}) writes")
            if not _path_allowed(path):
                _violate(f"os.open({path!r}) reads outside the allowed folders")
        return original(path, flags, *args, **kwargs)

    return guarded_os_open


def _forbid(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    def forbidden(*args: Any, **kwargs: Any) -> Any:
        if _STATE.active:
            _violate(f"{name}{args!r}")
        return original(*args, **kwargs)

    return forbidden


def _wrap_import_module(original: Callable[..., Any]) -> Callable[..., Any]:
    def guarded_import_module(name: str, package: str | None = None) -> Any:
        if _STATE.active and _caller_is_modelpack() and not (name.startswith("modelpack") or name.startswith(".")):
            _violate(f"importlib.import_module({name!r}) called by modelpack")
        return original(name, package)

    return guarded_import_module


_FORBIDDEN_OS = ("system", "popen", "fork", "forkpty", "execv", "execve", "execl", "execle", "execlp", "execlpe",
                 "execvp", "execvpe", "spawnv", "spawnve", "spawnl", "spawnle", "posix_spawn", "posix_spawnp",
                 "kill", "killpg", "remove", "unlink", "rename", "replace", "rmdir", "truncate", "ftruncate",
                 "symlink", "link", "mkdir", "makedirs", "chmod", "chown")


@pytest.fixture(autouse=True)
def _guards(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[None]:
    for name in _FORBIDDEN_OS:
        if hasattr(os, name):
            monkeypatch.setattr(os, name, _forbid(f"os.{name}", getattr(os, name)))
    monkeypatch.setattr(subprocess.Popen, "_execute_child",
                        _forbid("subprocess.Popen", subprocess.Popen._execute_child))
    monkeypatch.setattr(socket.socket, "__init__", _forbid("socket.socket", socket.socket.__init__))
    for name in ("create_connection", "getaddrinfo", "gethostbyname"):
        monkeypatch.setattr(socket, name, _forbid(f"socket.{name}", getattr(socket, name)))
    monkeypatch.setattr(importlib, "import_module", _wrap_import_module(importlib.import_module))
    monkeypatch.setattr(builtins, "open", _wrap_open(builtins.open))
    monkeypatch.setattr(io, "open", _wrap_open(io.open))
    monkeypatch.setattr(os, "open", _wrap_os_open(os.open))

    marker = request.node.get_closest_marker("budget")
    budget = float(marker.args[0]) if marker else DEFAULT_BUDGET

    def on_alarm(signum: int, frame: Any) -> None:
        raise CaseTimeout(f"{request.node.nodeid} ran past its {budget:.0f} s budget")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, budget)
    _STATE.violations = []
    _RESOLVED.clear()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert not _STATE.violations, f"guard violations: {_STATE.violations}"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "budget(seconds): time budget of one hostile test (SIGALRM)")


# --------------------------------------------------------------------------- running the readers

def _open(path: Path) -> None:
    api.Pack(path).close()


def _lazy(path: Path) -> None:
    with api.Pack(path) as pack:
        for name in pack.keys():
            pack.tensor(name)


READERS: dict[str, Callable[[Path], Any]] = {
    "open": _open,
    "tensors": _lazy,
    "load": lambda p: api.load(p, mmap=False),
    "load_verify": lambda p: api.load(p, verify=True),
    "verify": api.verify,
    "describe": inspect.describe,
}
STRUCTURAL = tuple(READERS)  # readers that must all refuse a structurally bad file


ANY = "*"  # refused(where=ANY): do not check where


def refused(path: Path, cls: type[ModelPackError], words: str = "", where: str | None = ANY,
            readers: tuple[str, ...] = STRUCTURAL) -> ModelPackError:
    """Every reader raises ``cls`` (message containing ``words``, ``where`` unless ANY); return one error."""
    errors = {}
    for name in readers:
        with guarded(path.parent):
            try:
                READERS[name](path)
            except ModelPackError as e:
                errors[name] = e
            else:
                pytest.fail(f"{name} accepted {path.name}")
    first = next(iter(errors.values()))
    for name, e in errors.items():
        assert isinstance(e, cls), f"{name}: {type(e).__name__}: {e}"
        assert words in str(e), f"{name}: {words!r} not in {e}"
        if where != ANY:
            assert e.where == where, f"{name}: where={e.where!r}, expected {where!r} ({e})"
        assert type(e) is type(first), f"readers disagree: {name} raised {e!r}, another {first!r}"
    return first


def write(tmp_path: Path, data: bytes, name: str = "f.mpk") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def tree_equal(a: Any, b: Any) -> bool:
    """Structural equality with bit-exact arrays/tensors (types included)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(tree_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(tree_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    if isinstance(a, np.generic):
        return a.dtype == b.dtype and a.tobytes() == b.tobytes()
    if type(a).__module__ == "torch":
        import torch

        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(
            a.reshape(-1).view(torch.uint8) if a.numel() else a, b.reshape(-1).view(torch.uint8) if b.numel() else b)
    if isinstance(a, float) and a != a:
        return b != b
    return a == b


__all__ = ["guarded", "refused", "write", "tree_equal", "READERS", "ANY", "GuardViolation", "CaseTimeout", "modelpack"]
