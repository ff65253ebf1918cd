"""Shared by the atheris harnesses: run every reader on one input, allow only ModelPackError.

A "crash" is any other exception (or a signal, a timeout, an out-of-memory kill, which
libFuzzer reports itself). Inputs are written to one temp file per process, on /dev/shm when
it exists, since the readers take paths.
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE.parent))  # tests/, for hostile.mpkcraft

warnings.simplefilter("ignore")  # numpy/torch warnings are not findings

def preload() -> None:
    """Import torch and modelpack's torch side now: a first import inside a unit takes longer than
    libFuzzer's -timeout (and torch._dynamo, imported lazily by meta ops, creates a cache folder)."""
    for name in ("modelpack.torch.tensors", "modelpack.torch.load", "modelpack.torch.shapes", "torch._dynamo"):
        try:
            __import__(name)
        except ImportError:
            pass


_DIR = tempfile.mkdtemp(prefix="mpk-fuzz-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
PATH = os.path.join(_DIR, "input.mpk")


def write(data: bytes) -> str:
    with open(PATH, "wb") as f:
        f.write(data)
    return PATH


def expect_modelpack_errors(readers: list[Callable[[str], Any]], path: str) -> None:
    """Run each reader; a ModelPackError is a correct refusal, anything else propagates (a finding)."""
    from modelpack.errors import ModelPackError

    for reader in readers:
        try:
            reader(path)
        except ModelPackError:
            pass


def pack_readers(*, model: bool = False) -> list[Callable[[str], Any]]:
    from modelpack import api, inspect

    def lazy(path: str) -> None:
        with api.Pack(path) as pack:
            for name in pack.keys():
                pack.tensor(name)

    readers = [lazy, lambda p: api.load(p, mmap=False), lambda p: api.load(p, verify=True), api.verify,
               inspect.describe]
    if model:
        try:
            from modelpack.torch.load import load_model
        except ImportError:
            pass
        else:
            readers.append(load_model)
    return readers


def wrap_manifest(manifest: bytes) -> bytes:
    """A valid zip (tensors a, b of mpkcraft's default pack) whose manifest member is ``manifest``."""
    from hostile.mpkcraft import mpk

    return mpk(raw_manifest=manifest).bytes()


def wrap_spec(spec: bytes) -> bytes:
    """A valid tensor-free pack whose spec.yaml member is ``spec`` (CRCs right)."""
    from hostile.mpkcraft import mpk

    return mpk(tensors={}, tree=None, spec=spec).bytes()


def crc_ok(data: bytes) -> int:
    return zlib.crc32(data)
