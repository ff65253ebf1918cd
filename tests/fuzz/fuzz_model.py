"""atheris harness for the spec and model layers: build, shapes, run, load_model and the CLI on fuzzed specs.

The first input byte picks a mode; the rest is spec text.

* even: ``validate``; if the spec is valid, build it on the meta device, check and infer its
  shapes, build it for real and run it once on zeros shaped like its inputs (symbolic dims 2, 4096 elements at most),
  all under lowered limits (64 MiB of parameters on meta, 1 MiB for real, 10k modules), so a per-input budget of 2 s
  and 1 GB is meaningful;
* odd: the text is the ``spec.yaml`` of a tensor-free pack, given to ``load_model`` and to the
  CLI (``validate``, ``inspect``, ``verify``), whose output must be escaped and whose failure
  must be one line with exit code 1 (exit code 3, an internal error, is a finding).

Any exception other than a ModelPackError is a finding; libFuzzer reports hangs and memory.

    python tests/fuzz/make_seeds.py build/fuzz
    python tests/fuzz/fuzz_model.py build/fuzz/model -max_total_time=1800 -timeout=2 -rss_limit_mb=1024 \\
        -dict=tests/fuzz/spec.dict
"""

from __future__ import annotations

import contextlib
import io
import sys

import atheris

import _harness

with atheris.instrument_imports(include=["modelpack"]):
    import modelpack
    from modelpack import limits
    from modelpack.cli import main
    from modelpack.errors import ModelPackError
    from modelpack.spec.blocks import expand_blocks

_harness.preload()
import torch  # noqa: E402

from modelpack.torch.shapes import check_shapes, output_shapes  # noqa: E402

_CAPS = {"max_param_bytes": 64 << 20, "max_modules": 10_000, "max_nodes": 2_000, "max_tensors": 10_000}


def _inputs(spec: dict) -> list[torch.Tensor]:
    out = []
    for decl in spec["inputs"].values():
        shape = [2 if isinstance(d, str) else min(int(d), 64) for d in decl["shape"]]
        dtype = getattr(torch, decl.get("dtype", "float32"), torch.float32)
        out.append(torch.zeros(shape, dtype=dtype))
    return out


def _model_layer(text: bytes) -> None:
    try:
        data = modelpack.validate(text)
        model = modelpack.build(data, device="meta")
        check_shapes(data)
        output_shapes(data)
        expanded = expand_blocks(data)
        inputs = _inputs(expanded)
        if sum(x.numel() for x in inputs) > 4096:  # a real forward costs compute, legitimately: keep it small
            return
        with limits.raised(max_param_bytes=1 << 20):  # initialising real weights is legitimate work: keep it small
            model = modelpack.build(data).eval()
        with torch.no_grad():
            model(*inputs)
    except ModelPackError:
        pass
    except (RuntimeError, ValueError, TypeError, IndexError) as e:
        # torch refusing a well-formed spec's arguments at run time (a shape mismatch) is the spec's
        # problem, reported by validate --shapes; only modelpack's own frames make it a finding
        if _raised_in_modelpack(e):
            raise


def _raised_in_modelpack(e: BaseException) -> bool:
    tb = e.__traceback__
    last = None
    while tb is not None:
        last = tb.tb_frame.f_code.co_filename
        tb = tb.tb_next
    return last is not None and "/modelpack/" in last and "/modelpack/torch/ops.py" not in last


def _cli(path: str) -> None:
    for argv in (["validate", path], ["inspect", path], ["verify", path]):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err):
            code = main(argv, out=out)
        text = out.getvalue() + err.getvalue()
        assert code in (0, 1), (argv, code, text)
        assert all(c.isprintable() or c == "\n" for c in text), (argv, text)
        if code == 1 and argv[0] != "validate":
            assert len([line for line in text.splitlines() if line.strip()]) == 1, (argv, text)


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    body = data[1:]
    with limits.raised(**_CAPS):
        if data[0] % 2 == 0:
            _model_layer(body)
        else:
            path = _harness.write(_harness.wrap_spec(body))
            _harness.expect_modelpack_errors([modelpack.load_model], path)
            _cli(path)


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
