"""atheris harness: modelpack.load / verify / describe on fuzzed files.

The first input byte picks a mode, so the fuzzer can reach past the CRC of the manifest:

* even: the rest is a whole .mpk file;
* odd: the rest is the text of ``manifest.json``, wrapped in a valid zip (tensors ``a``, ``b``)
  with every CRC computed, which fuzzes the manifest, tensor and tree checks directly.

    python tests/fuzz/make_seeds.py build/fuzz
    python tests/fuzz/fuzz_load.py build/fuzz/load -max_total_time=600 -timeout=10 -rss_limit_mb=4096 \
        -dict=tests/fuzz/mpk.dict
"""

from __future__ import annotations

import sys

import atheris

import _harness

with atheris.instrument_imports(include=["modelpack"]):
    import modelpack.api  # noqa: F401
    import modelpack.inspect  # noqa: F401  (instrumented for coverage)

_harness.preload()

READERS = _harness.pack_readers(model=True)


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    body = data[1:]
    raw = body if data[0] % 2 == 0 else _harness.wrap_manifest(body)
    _harness.expect_modelpack_errors(READERS, _harness.write(raw))


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
