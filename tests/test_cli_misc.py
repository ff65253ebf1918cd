"""The command line's small promises: --version, help for every argument, empty folders, diff of values."""

from __future__ import annotations

import argparse
import io
from importlib.metadata import PackageNotFoundError, version

import numpy as np
import pytest

import modelpack
from modelpack import api
from modelpack.cli import _parser, main


def cli(*argv: object) -> tuple[int, str]:
    out = io.StringIO()
    return main([str(a) for a in argv], out=out), out.getvalue()


def test_version(capsys):
    assert main(["--version"]) == 0
    try:
        expected = version("modelpack")
    except PackageNotFoundError:
        expected = modelpack.__version__
    assert capsys.readouterr().out == f"modelpack {expected}\n"


def _parsers(parser: argparse.ArgumentParser, name: str = "modelpack"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def test_every_argument_of_every_command_has_help():
    seen = 0
    for name, parser in _parsers(_parser()):
        for action in parser._actions:
            seen += 1
            assert action.help and action.help != argparse.SUPPRESS, f"{name}: {action.dest} has no help"
    assert seen > 15


def test_validate_a_folder_without_specs_fails(tmp_path):
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "skipped.yaml").write_text("modelpack: 1\n")
    (tmp_path / "notes.txt").write_text("no spec here")
    code, text = cli("validate", tmp_path)
    assert code == 1 and text == f"{tmp_path}: no specs found in this folder (searched for *.yaml, *.yml, " \
                                 "*.json, *.mpk; hidden ones skipped)\n"


# --------------------------------------------------------------------------- diff of values


def _pair(tmp_path, a: object, b: object, meta_a=None, meta_b=None):
    pa, pb = tmp_path / "a.mpk", tmp_path / "b.mpk"
    api.save(a, pa, metadata=meta_a)
    api.save(b, pb, metadata=meta_b)
    return pa, pb


def test_diff_counts_a_changed_scalar(tmp_path):
    w = np.arange(3.0)
    pa, pb = _pair(tmp_path, {"w": w, "opt": {"lr": 0.1, "betas": (0.9, 0.99)}, "name": "run"},
                   {"w": w, "opt": {"lr": 0.2, "betas": (0.9, 0.99)}, "name": "run"})
    code, text = cli("diff", pa, pb)
    assert code == 1 and "  opt.lr: 0.1 -> 0.2\n" in text and "DIFFERENT" in text
    assert "betas" not in text and "name" not in text.split("B: ")[1]


@pytest.mark.parametrize("a, b, line", [
    ({"n": 1}, {"n": 1.0}, "n: 1 -> 1.0"),
    ({"n": None}, {"n": "x"}, "n: None -> 'x'"),
    ({"n": np.zeros(2)}, {"n": 0.0}, "n: tensor [2] float64 -> 0.0"),
    ({"n": []}, {"n": [1]}, "n: [] -> only in A"),
])
def test_diff_sees_type_and_kind_changes(tmp_path, a, b, line):
    code, text = cli("diff", *_pair(tmp_path, a, b))
    key, _, change = line.partition(": ")
    assert code == 1
    if "only in" in change:
        assert f"  {key}: only in A" in text
    else:
        assert f"  {line}\n" in text


def test_diff_of_equal_values_and_nan_is_same(tmp_path):
    tree = {"lr": float("nan"), "steps": [1, 2], "w": np.ones(2)}
    code, text = cli("diff", *_pair(tmp_path, tree, tree))
    assert code == 0 and "4 keys, 4 identical" in text and "SAME" in text


def test_diff_counts_metadata(tmp_path):
    code, text = cli("diff", *_pair(tmp_path, {"w": np.ones(1)}, {"w": np.ones(1)}, {"license": "MIT"},
                                    {"license": "BSD"}))
    assert code == 1 and "metadata 'license': 'MIT' -> 'BSD'" in text and "DIFFERENT" in text


def test_diff_of_int64_above_2_53_is_exact(tmp_path):
    big = np.array([2**60, -(2**62)], dtype=np.int64)
    code, text = cli("diff", *_pair(tmp_path, {"i": big}, {"i": big + np.array([1, 2**63 - 1])}))
    assert code == 1 and "i: max abs 9.22e+18" in text
    code, text = cli("diff", *_pair(tmp_path, {"i": big}, {"i": big + 1}))
    assert code == 1 and "i: max abs 1, " in text
    code, text = cli("diff", *_pair(tmp_path, {"i": big}, {"i": big + 1}), "--atol", "1")
    assert code == 0 and "(within atol 1)" in text
