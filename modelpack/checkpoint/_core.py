"""The Checkpointer: save, restore, retention and the one background writer.

Ordering that makes a crash at any instant harmless:

1. remove temp files of dead writers; if ``step`` is below existing
   checkpoints the run branched, so move those aside (``_branch``); remove
   checkpoints beyond the policy that an earlier crash left behind (the
   policy's own checkpoints stay);
2. write the new checkpoint whole to a temp file, fsync it, rename it to
   ``ckpt-<step>.mpk``, fsync the folder (``modelpack._fs.atomic_write``);
3. only then delete what retention drops, and fsync the folder again.

``restore`` lists the folder, so it only ever sees renamed (complete) files,
and verifies every checksum of the one it picks, falling back to older ones.
"""

from __future__ import annotations

import dataclasses
import operator
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import api, tree
from ..errors import CheckpointError, ModelPackError
from . import _branch, _dist, _files, _state
from ._background import BackgroundWriter, failure_message, reason
from ._files import CheckpointFile
from ._snapshot import Snapshotter, tensor_nbytes

__all__ = [
    "Checkpointer",
    "Checkpoint",
    "RestoreInfo",
    "CheckpointWarning",
    "FORMAT",
    "VERSION",
    "META_PREFIX",
]

FORMAT = "modelpack.checkpoint"
VERSION = 1
META_PREFIX = "modelpack.checkpoint."
COMPONENTS = ("model", "optimizer", "scheduler", "scaler")


class CheckpointWarning(UserWarning):
    """A checkpoint was skipped (damaged, unreadable), moved aside by a branch, or partly restored."""


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A checkpoint read back and verified: its step, file, and the saved tree."""

    step: int
    path: Path
    state: dict[str, Any]

    @property
    def extra(self) -> Any:
        """The ``extra=`` tree given to ``save`` (None when there was none)."""
        return self.state.get("extra")


@dataclasses.dataclass(frozen=True)
class RestoreInfo:
    """What the last ``restore`` did: which file, which step, and what it skipped."""

    step: int
    path: Path
    extra: Any
    skipped: tuple[tuple[Path, str], ...] = ()


class Checkpointer:
    """Crash-safe training checkpoints in one folder; see docs/CHECKPOINTS.md.

    ``save(step, ...)`` records the state *after* step ``step`` has run;
    ``restore(...)`` loads the newest checkpoint that verifies and returns
    ``step + 1``, the first step still to run (0 when there is none)::

        ckpt = Checkpointer("runs/exp1", keep_last=3, keep_every=1000)
        start = ckpt.restore(model=model, optimizer=opt)
        for step in range(start, total):
            train_one_step()
            if step % 100 == 0:
                ckpt.save(step, model=model, optimizer=opt)
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        keep_last: int | None = 3,
        keep_every: int | None = None,
        prefix: str = "ckpt",
        progress: bool = False,
    ) -> None:
        self.directory = Path(directory)
        self.keep_last = _positive_or_none(keep_last, "keep_last")
        self.keep_every = _positive_or_none(keep_every, "keep_every")
        if not _files.PREFIX_RE.fullmatch(prefix):
            raise ValueError(f"prefix {prefix!r} must match {_files.PREFIX_RE.pattern}")
        self.prefix = prefix
        self.progress = progress
        self.restored: RestoreInfo | None = None
        self._snapshots = Snapshotter()
        self._writer = BackgroundWriter()
        self._pending: tuple[int, Path, Any] | None = None  # a distributed async_save in flight

    def __repr__(self) -> str:
        return (
            f"Checkpointer({str(self.directory)!r}, keep_last={self.keep_last}, "
            f"keep_every={self.keep_every}, prefix={self.prefix!r})"
        )

    # ------------------------------------------------------------------ listing

    def checkpoints(self) -> list[CheckpointFile]:
        """Published checkpoints of the live branch, oldest first (not verified; temp files never listed)."""
        return _branch.live(self.directory, self.prefix)

    def latest(self) -> CheckpointFile | None:
        """The highest-step checkpoint file, or None (not verified: ``restore`` does that)."""
        files = self.checkpoints()
        return files[-1] if files else None

    def path_for(self, step: int) -> Path:
        """Where the checkpoint of ``step`` lives (or will): a .mpk file, or a .dcp folder in a distributed run."""
        name = _files.file_name(self.prefix, _check_step(step))
        return self.directory / (_dist.folder_name(name) if _dist.active() else name)

    # ------------------------------------------------------------------ saving

    def save(
        self,
        step: int,
        *,
        model: Any = None,
        optimizer: Any = None,
        scheduler: Any = None,
        scaler: Any = None,
        extra: Any = None,
        generators: Mapping[str, Any] | None = None,
        rng: bool = True,
        metadata: Mapping[str, str] | None = None,
        blocking: bool = True,
    ) -> Path:
        """Checkpoint the state after step ``step``; return the checkpoint's path.

        ``blocking=False`` copies the tensors (the loop may mutate its own
        right away) and writes in a background thread; a second save first
        waits for that write. Any earlier background failure is raised here
        as a CheckpointError before anything else happens.
        """
        step = _check_step(step)
        path = self.path_for(step)
        self.wait()
        components = dict(model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler)
        if _dist.active():
            return self._save_distributed(step, components, extra, generators, rng, blocking)
        state = _collect(step, components, extra, generators, rng)
        meta = _metadata(step, state, metadata)
        if blocking:
            self._write(step, path, tree.encode(state), meta)
        else:
            encoded = tree.encode(self._snapshots.take(state))
            self._writer.submit(step, lambda: self._write(step, path, encoded, meta))
        return path

    def _write(self, step: int, path: Path, encoded: tuple[Any, list[Any]], meta: dict[str, str]) -> None:
        try:
            _files.ensure_folder(self.directory)
            _files.sweep_temps(self.directory, self.prefix)
            _branch.settle(self.directory, self.prefix, step, lambda moved: _warn_branched(step, moved))
            self._prune(())
            _files.write_file(encoded, path, metadata=meta, progress=self.progress)
        except (OSError, ModelPackError) as e:
            message = f"could not write the checkpoint of step {step}: {reason(e)}"
            raise CheckpointError(message, source=str(path)) from e
        self._prune_after(step, path)

    def _save_distributed(self, step: int, components: Mapping[str, Any], extra: Any,
                          generators: Mapping[str, Any] | None, rng: bool, blocking: bool) -> Path:
        """Every rank calls this; the checkpoint is the folder ``ckpt-<step>.dcp`` (see ``_dist``)."""
        folder = self.path_for(step)
        header = {"format": FORMAT, "version": VERSION, "step": step}
        state = _dist.collect(step, components, extra, generators, rng, header)
        coordinator = _dist.rank() == 0
        try:
            if coordinator:
                _files.ensure_folder(self.directory)
                _files.sweep_temps(self.directory, self.prefix)
                _dist.sweep_uncommitted(self.directory, self.prefix, folder)
                _branch.settle(self.directory, self.prefix, step, lambda moved: _warn_branched(step, moved))
                self._prune(())
            pending = _dist.save(folder, state, blocking)
        except (OSError, ModelPackError) as e:
            raise CheckpointError(f"could not write the checkpoint of step {step}: {reason(e)}", source=str(folder)) from e
        if pending is None:
            self._after_commit(step, folder)
        else:
            self._pending = (step, folder, pending)
        return folder

    def _after_commit(self, step: int, folder: Path) -> None:
        """Only the coordinator prunes, and only once the new checkpoint is committed."""
        if _dist.rank() == 0:
            self._prune_after(step, folder)

    def _prune_after(self, step: int, saved: Path) -> None:
        """Retention once ``saved`` is in place; a failure here leaves the new checkpoint saved and says so."""
        try:
            self._prune((step,))
        except OSError as e:
            raise CheckpointError(
                f"the checkpoint of step {step} is saved, but removing old checkpoints failed: {reason(e)}",
                source=str(saved),
            ) from e

    def _prune(self, pinned: tuple[int, ...]) -> list[Path]:
        return _files.prune(self.directory, self.prefix, self.keep_last, self.keep_every, pinned)

    def wait(self) -> None:
        """Block until the background save (if any) is durable; raise its error if it failed."""
        if self._pending is not None:
            step, folder, future = self._pending
            self._pending = None
            try:
                future.result()
            except BaseException as e:  # DCP's CheckpointException derives from BaseException
                raise CheckpointError(f"the background save of step {step} failed: {reason(e)}",
                                      source=str(folder)) from e
            self._after_commit(step, folder)
        self._writer.join()
        failure = self._writer.take_failure()
        if failure is not None:
            raise CheckpointError(failure_message(*failure)) from failure[1]

    def close(self) -> None:
        """Flush the background save and drop the snapshot buffers (one host copy of the state)."""
        try:
            self.wait()
        finally:
            self._snapshots.release()

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is None:
            self.close()
            return
        try:  # never replace the body's exception with a save error: report it instead
            self.close()
        except CheckpointError as e:
            warnings.warn(str(e), CheckpointWarning, stacklevel=2)

    # ------------------------------------------------------------------ restoring

    def load(self, path: str | os.PathLike[str] | None = None, *, map_location: Any = None) -> Checkpoint | None:
        """The newest checkpoint that verifies (or the one at ``path``), without applying it.

        A damaged newest file is skipped with a CheckpointWarning naming it;
        if files exist but none verifies, CheckpointError lists them all.
        An explicit ``path`` is read with no fallback. None when the folder
        holds no checkpoint.
        """
        self.wait()
        found = self._find(path, map_location)
        return None if found is None else found[0]

    def restore(
        self,
        *,
        model: Any = None,
        optimizer: Any = None,
        scheduler: Any = None,
        scaler: Any = None,
        generators: Mapping[str, Any] | None = None,
        rng: bool = True,
        strict: bool = True,
        path: str | os.PathLike[str] | None = None,
        map_location: Any = None,
    ) -> int:
        """Load the newest good checkpoint into the given objects; return the step to run next.

        Returns ``saved_step + 1``, or 0 when there is no checkpoint (the
        objects are then left untouched). Components saved but not passed are
        ignored; passed but not saved raise CheckpointError. ``extra`` and the
        file used are in :attr:`restored` afterwards.
        """
        self.wait()
        found = self._find(path, map_location)
        if found is None:
            self.restored = None
            return 0
        ckpt, skipped = found
        components = dict(model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler)
        try:
            if ckpt.path.is_dir():
                ckpt = Checkpoint(ckpt.step, ckpt.path, _dist.restore(ckpt.path, components, generators, rng, strict))
            else:
                _apply(ckpt.state, components, generators, rng, strict)
        except CheckpointError as e:
            raise e.with_context(source=str(ckpt.path))
        self.restored = RestoreInfo(ckpt.step, ckpt.path, ckpt.extra, tuple(skipped))
        return ckpt.step + 1

    def _find(self, path: str | os.PathLike[str] | None, map_location: Any) -> tuple[Checkpoint, list] | None:
        if path is None and self.directory.is_file():
            path = self.directory  # Checkpointer("runs/x/ckpt-000000001200.mpk").restore(...)
        if path is not None:
            return _read(Path(path), None, map_location, self.progress), []
        candidates = self.checkpoints()
        skipped: list[tuple[Path, str]] = []
        for f in reversed(candidates):
            try:
                return _read(f.path, f.step, map_location, self.progress), skipped
            except CheckpointError as e:
                if isinstance(e.__cause__, FileNotFoundError):
                    continue  # removed meanwhile by another writer's retention
                skipped.append((f.path, reason(e.__cause__ or e)))
                warnings.warn(
                    f"checkpoint {f.path} is damaged ({reason(e.__cause__ or e)}); trying an older one",
                    CheckpointWarning,
                    stacklevel=3,
                )
        if skipped:
            listing = "; ".join(f"{p.name}: {why}" for p, why in skipped)
            raise CheckpointError(
                f"no checkpoint in the folder verifies ({listing}); move the damaged files away to start over",
                source=str(self.directory),
            )
        return None


def _warn_branched(step: int, branch: _branch.Branch) -> None:
    names = ", ".join(p.name for p in branch.files)
    warnings.warn(
        f"saving step {step}, below newer checkpoints: the run branched, so the checkpoints above step "
        f"{branch.above} moved (nothing deleted) into {branch.into}: {names}. Restore resumes on the new "
        "branch; move them back to return to the old one",
        CheckpointWarning,
        stacklevel=2,
    )


# ---------------------------------------------------------------------- state <-> tree


def _collect(
    step: int,
    components: Mapping[str, Any],
    extra: Any,
    generators: Mapping[str, Any] | None,
    rng: bool,
) -> dict[str, Any]:
    """The tree one checkpoint stores; sections appear only when given."""
    state: dict[str, Any] = {"format": FORMAT, "version": VERSION, "step": step}
    for name, obj in components.items():
        if obj is not None:
            state[name] = _state.component_state(obj, name)
    if extra is not None:
        state["extra"] = extra
    if generators:
        state["generators"] = _state.capture_generators(generators)
    if rng:
        state["rng"] = _state.capture_rng()
    return state


def _apply(
    state: Mapping[str, Any],
    components: Mapping[str, Any],
    generators: Mapping[str, Any] | None,
    rng: bool,
    strict: bool,
) -> None:
    for name, obj in components.items():
        if obj is None:
            continue
        if name not in state:
            held = ", ".join(k for k in state if k not in ("format", "version", "step")) or "nothing"
            raise CheckpointError(f"{name}= was given but the checkpoint holds no {name} state (it holds: {held})")
        _state.load_component(obj, state[name], name, strict=strict)
    if generators:
        _state.apply_generators(generators, state.get("generators") or {})
    if rng and "rng" in state:
        _state.apply_rng(state["rng"])


def _read(path: Path, expected_step: int | None, map_location: Any, progress: bool) -> Checkpoint:
    """Verify every checksum, load into fresh memory, check it is a checkpoint of the right step.

    A distributed checkpoint folder is verified whole; its state is read by ``restore`` (it needs the
    objects to shard into), so the Checkpoint carries the step only.
    """
    if path.is_dir():
        return _read_folder(path, expected_step)
    try:
        state = api.load(path, mmap=False, map_location=map_location, verify=True, progress=progress)
    except (OSError, ModelPackError) as e:
        raise CheckpointError(f"cannot read the checkpoint: {reason(e)}", source=str(path)) from e
    step = _check_state(state, path)
    if expected_step is not None and step != expected_step:
        problem = CheckpointError(f"the file name says step {expected_step}, the content says {step}")
        raise CheckpointError(str(problem), source=str(path)) from problem
    return Checkpoint(step, path, state)


def _read_folder(path: Path, expected_step: int | None) -> Checkpoint:
    try:
        header = _dist.read_header(path)
    except (OSError, ModelPackError) as e:
        raise CheckpointError(f"cannot read the checkpoint: {reason(e)}", source=str(path)) from e
    step = _check_state(header, path)
    if expected_step is not None and step != expected_step:
        problem = CheckpointError(f"the folder name says step {expected_step}, the content says {step}")
        raise CheckpointError(str(problem), source=str(path)) from problem
    return Checkpoint(step, path, header)


def _check_state(state: Any, path: Path) -> int:
    if not (isinstance(state, dict) and state.get("format") == FORMAT):
        problem = CheckpointError("a .mpk file, but not a modelpack checkpoint (made by modelpack.save?)")
    elif type(state.get("version")) is not int or state["version"] > VERSION:
        problem = CheckpointError(f"checkpoint version {state.get('version')!r}; this modelpack reads up to {VERSION}")
    elif type(state.get("step")) is not int or state["step"] < 0:
        problem = CheckpointError(f"step {state.get('step')!r} is not a non-negative integer")
    else:
        return state["step"]
    raise CheckpointError(problem.message, source=str(path)) from problem


def _metadata(step: int, state: Mapping[str, Any], user: Mapping[str, str] | None) -> dict[str, str]:
    """Manifest metadata, so ``modelpack inspect`` shows step, contents and sizes."""
    sections = [k for k in state if k not in ("format", "version", "step")]
    meta = {
        META_PREFIX + "format": str(VERSION),
        META_PREFIX + "step": str(step),
        META_PREFIX + "contents": ", ".join(sections),
        META_PREFIX + "sizes": ", ".join(f"{k}={_human(tensor_nbytes(state[k]))}" for k in sections),
    }
    for key, value in (user or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"metadata must map str to str; got {key!r}: {type(value).__name__}")
        if key.startswith(META_PREFIX):
            raise ValueError(f"metadata key {key!r} is reserved (prefix {META_PREFIX!r})")
        meta[key] = value
    return meta


# ---------------------------------------------------------------------- small helpers


def _check_step(step: Any) -> int:
    if isinstance(step, bool):
        raise TypeError("step must be an integer, not a bool")
    try:
        value = operator.index(step)
    except TypeError:
        raise TypeError(f"step must be an integer, not {type(step).__name__!r}") from None
    if not 0 <= value <= _files.MAX_STEP:
        raise ValueError(f"step {value} is out of range 0..{_files.MAX_STEP}")
    return value


def _positive_or_none(value: int | None, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer or None, not {value!r}")
    return value


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return f"{n} B"  # pragma: no cover
