"""The hostile suite's guards (see guards.py): applied to every test in this folder."""

from .guards import _guards, pytest_configure  # noqa: F401  (autouse fixture + marker registration)
