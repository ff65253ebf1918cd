"""atheris harness: modelpack.open (the strict zip + manifest reader) on fuzzed whole files.

Each input is a complete file. Besides ``open``, every tensor is mapped and ``describe`` runs,
so a structure that passes the checks must also be safe to map.

    python tests/fuzz/make_seeds.py build/fuzz
    python tests/fuzz/fuzz_open.py build/fuzz/open -max_total_time=600 -timeout=10 -dict=tests/fuzz/mpk.dict
"""

from __future__ import annotations

import sys

import atheris

import _harness

with atheris.instrument_imports(include=["modelpack"]):
    from modelpack import api, inspect

_harness.preload()


def _open_all(path: str) -> None:
    with api.Pack(path) as pack:
        for name in pack.keys():
            pack.tensor(name)


READERS = [_open_all, inspect.describe]


def TestOneInput(data: bytes) -> None:
    _harness.expect_modelpack_errors(READERS, _harness.write(data))


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
