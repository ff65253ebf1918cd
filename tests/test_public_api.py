"""The public surface is small and deliberate: changing it must be a visible decision."""

from __future__ import annotations

import inspect

import modelpack

from conftest import run_python

EXPECTED = {
    "save": "(obj, path, *, metadata=None, progress=None, max_shard_size=None, sha256=False)",
    "load": "(path, *, mmap=True, map_location=None, verify=False, progress=None, dtype=None, device_map=None, "
            "framework=None, keys=None)",
    "save_bytes": "(obj, *, metadata=None)",
    "load_bytes": "(data, *, map_location=None, dtype=None, device_map=None)",
    "open": "(path)",
    "verify": "(path, *, progress=None)",
    "validate": "(spec, *, shapes=False, source=None)",
    "export": "(model, path, example_inputs, *, metadata=None, name=None, dynamic_dims=None, dynamic_shapes=None, "
              "capture=None, atol=0.0, max_shard_size=None, dynamic_timeout=60.0)",
    "load_model": "(path, *, map_location=None, mmap=True, strict=True, outputs=None, dtype=None, device_map=None)",
    "build": "(spec, *, device=None)",
    "load_weights": "(module, path, *, prefix=None, rename=None, strict=True, assign=False)",
    "convert": "(src, dst, *, src_format=None, dst_format=None, sha256=False, progress=None)",
    "digest": "(path, *, progress=None)",
}


def _plain(sig: inspect.Signature) -> str:
    return str(sig.replace(parameters=[p.replace(annotation=p.empty) for p in sig.parameters.values()],
                           return_annotation=inspect.Signature.empty))


def test_public_names():
    assert sorted(modelpack.__all__) == sorted([
        *EXPECTED, "Checkpointer", "CheckpointWarning", "limits", "ModelPackError", "FormatError",
        "NotAModelPackError", "IntegrityError", "LimitError", "SpecError", "BuildError", "ExportError",
        "CheckpointError",
    ])


def test_public_signatures(torch):
    for name, expected in EXPECTED.items():
        assert _plain(inspect.signature(getattr(modelpack, name))) == expected, name


def test_import_does_not_import_torch():
    proc = run_python("import sys, modelpack; print('torch' in sys.modules)")
    assert proc.returncode == 0 and proc.stdout.strip() == "False", proc.stderr


def test_error_families_inherit_builtins():
    assert issubclass(modelpack.FormatError, ValueError)
    assert issubclass(modelpack.CheckpointError, modelpack.ModelPackError)
    assert issubclass(modelpack.NotAModelPackError, modelpack.FormatError)
