"""Crash-safe training checkpoints on top of modelpack.save / load (no pickle anywhere).

``Checkpointer`` is the entry point; see its docstring and docs/CHECKPOINTS.md.
"""

from __future__ import annotations

from ._core import Checkpoint, Checkpointer, CheckpointWarning, RestoreInfo
from ._describe import describe_checkpoint
from ._files import CheckpointFile

__all__ = [
    "Checkpointer",
    "Checkpoint",
    "CheckpointFile",
    "RestoreInfo",
    "CheckpointWarning",
    "describe_checkpoint",
]
