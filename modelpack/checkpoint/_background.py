"""The one background thread per Checkpointer that writes asynchronous saves.

At most one write is in flight; its exception is kept and handed to the
owner's next call. Interpreter exit waits for running writes (and reports a
failure nobody collected), so a script that ends, or is stopped with Ctrl-C,
right after ``save(blocking=False)`` still publishes that checkpoint.
"""

from __future__ import annotations

import atexit
import concurrent.futures.thread  # noqa: F401 - its exit hook must be registered before ours (see _join_all)
import sys
import threading
import weakref
from collections.abc import Callable

__all__ = ["BackgroundWriter", "failure_message", "reason"]

_LIVE: "weakref.WeakSet[BackgroundWriter]" = weakref.WeakSet()


class BackgroundWriter:
    """Runs one job at a time on a fresh non-daemon thread and keeps its failure."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._failure: tuple[int, BaseException] | None = None
        self._lock = threading.Lock()

    def submit(self, step: int, job: Callable[[], None]) -> None:
        """Start ``job`` (the save of ``step``) after any previous one has finished."""
        self.join()
        thread = threading.Thread(target=self._run, args=(step, job), name=f"modelpack-checkpoint-{step}")
        with self._lock:
            self._thread = thread
        _LIVE.add(self)
        thread.start()  # not a daemon: interpreter exit waits for the write to finish

    def _run(self, step: int, job: Callable[[], None]) -> None:
        try:
            job()
        except BaseException as e:  # kept and re-raised by the owner's next call
            with self._lock:
                self._failure = (step, e)

    def join(self) -> None:
        """Wait for the running job, if any."""
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join()
            with self._lock:
                if self._thread is thread:
                    self._thread = None

    def take_failure(self) -> tuple[int, BaseException] | None:
        """The (step, exception) of a failed job, once; None if nothing failed since the last call."""
        with self._lock:
            failure, self._failure = self._failure, None
        return failure


def reason(e: BaseException | None) -> str:
    """An exception as a short clause: ``No space left on device (errno 28): /path``."""
    if e is None:
        return "unknown error"
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror} (errno {e.errno})" + (f": {e.filename}" if e.filename else "")
    return str(e) or type(e).__name__


def failure_message(step: int, error: BaseException) -> str:
    return f"the background save of step {step} failed: {reason(error)}"


def _join_all() -> None:
    """Finish running writes while worker pools still accept work.

    At exit Python runs threading's exit hooks (newest first) before joining
    plain threads; concurrent.futures' hook makes every ThreadPoolExecutor
    refuse new work, and the container writer uses one for checksums. Joining
    our writers in an earlier hook lets their saves complete normally.
    """
    for writer in list(_LIVE):
        writer.join()


_register_thread_exit = getattr(threading, "_register_atexit", None)
if _register_thread_exit is not None:  # CPython >= 3.9
    _register_thread_exit(_join_all)


@atexit.register
def _report_at_exit() -> None:
    """Print background failures that no ``wait()`` collected (their writers are done by now)."""
    for writer in list(_LIVE):
        writer.join()
        failure = writer.take_failure()
        if failure is not None:
            print(f"modelpack: error: {failure_message(*failure)}", file=sys.stderr)
