"""examples/reuse_backbone.py: a packed backbone under a new head, fine-tuned; the loss goes down."""

from __future__ import annotations

import re

import pytest

from conftest import ROOT, run_python

pytest.importorskip("torch")


def test_reuse_backbone_example_runs_and_learns(tmp_path):
    script = ROOT / "examples" / "reuse_backbone.py"
    result = run_python(f"import runpy, sys; sys.argv = ['x', {str(tmp_path)!r}]; "
                        f"runpy.run_path({str(script)!r}, run_name='__main__')", timeout=300)
    assert result.returncode == 0, result.stderr
    losses = [float(v) for v in re.findall(r"step \d+: loss ([0-9.]+)", result.stdout)]
    assert len(losses) >= 5 and losses[-1] < losses[0]
    assert "backbone layers: features" in result.stdout
    assert re.search(r"load_weights: 9 loaded, 0 missing, 0 unused, 0 mismatched", result.stdout)
    assert (tmp_path / "cnn.mpk").exists()
