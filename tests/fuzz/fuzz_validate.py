"""atheris harness: modelpack.validate on fuzzed YAML/JSON specs, alone and inside a .mpk.

The first input byte picks a mode: even, the rest is spec text given to ``validate``; odd, it is
the ``spec.yaml`` member of an otherwise valid pack, read by ``verify`` (and by ``describe``,
which also infers shapes, when the byte is 1 mod 4).

    python tests/fuzz/make_seeds.py build/fuzz
    python tests/fuzz/fuzz_validate.py build/fuzz/validate -max_total_time=600 -timeout=60 \
        -dict=tests/fuzz/spec.dict
"""

from __future__ import annotations

import sys

import atheris

import _harness

with atheris.instrument_imports(include=["modelpack"]):
    from modelpack import api, inspect
    from modelpack.spec import validate

_harness.preload()


def _validate(data: bytes) -> None:
    from modelpack.errors import ModelPackError

    try:
        validate(data)
    except ModelPackError:
        pass


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    body = data[1:]
    if data[0] % 2 == 0:
        _validate(body)
    elif data[0] % 4 == 1:  # describe also infers shapes on the meta device: slower, so only half the time
        path = _harness.write(_harness.wrap_spec(body))
        _harness.expect_modelpack_errors([api.verify, inspect.describe], path)
    else:
        _harness.expect_modelpack_errors([api.verify], _harness.write(_harness.wrap_spec(body)))


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
