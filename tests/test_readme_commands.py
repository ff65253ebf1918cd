"""The README's two commands are the ones people run: CI must run exactly the test command."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text[text.index("## Two commands"):]
    block = block[block.index("```bash") + len("```bash"):]
    block = block[:block.index("```")]
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_readme_has_a_demo_and_a_test_command_that_each_make_their_own_venv() -> None:
    demo, tests = _readme_commands()
    for command in (demo, tests):
        assert command.startswith("python3 -m venv .venv && .venv/bin/pip install"), command
    assert "examples/" in demo and demo.split("&&")[-1].strip().startswith(".venv/bin/python ")
    assert tests.endswith(".venv/bin/python -m pytest -q")


def test_ci_runs_exactly_the_readme_test_command_in_a_fresh_venv() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    _, tests = _readme_commands()
    lines = [line.strip() for line in ci.splitlines()]
    assert tests in lines, "the README's test command is not a line of .ci/run"
    assert lines.index("rm -rf .venv") < lines.index(tests), ".ci/run must start from a brand-new venv"


def test_the_test_command_installs_with_the_constraints_file() -> None:
    _, tests = _readme_commands()
    constraints = re.search(r"-c (\S+)", tests)
    assert constraints and (ROOT / constraints.group(1)).is_file()
