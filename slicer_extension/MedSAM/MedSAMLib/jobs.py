"""Long work off Slicer's main thread, with progress, cancel and a main-thread finish step.

The heavy part (encoding slices, propagating) runs in a Python thread: torch and onnxruntime
release the GIL while they compute, so Slicer stays responsive. MRML nodes must only be changed
on the main thread, so a job's `finish` step runs where `poll()` is called: the module widget
polls from a QTimer, batch scripts and tests call `wait()` (which polls when done).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

WorkFn = Callable[[Callable[[int, int], None], Callable[[], bool]], Any]


class BackgroundJob:
    """Run `work(progress, cancelled)` in a thread; `finish(result)` later on the polling thread.

    Args:
        work: the heavy function; calls progress(done, total) and checks cancelled() often.
        finish: optional; receives the work's result on the thread that calls `poll()`.
        name: shown in messages ("Embedding", "Propagation"...).
    """

    def __init__(self, work: WorkFn, finish: Callable[[Any], Any] | None = None,
                 name: str = "Work"):
        self.name = name
        self.done = 0
        self.total = 0
        self.result: Any = None
        self.error: BaseException | None = None
        self.finished_result: Any = None
        self._work = work
        self._finish = finish
        self._cancel = threading.Event()
        self._ended = threading.Event()
        self._finished = False
        self.started_at = time.perf_counter()
        self.seconds = 0.0
        self._thread = threading.Thread(target=self._run, name=f"MedSAM {name}", daemon=True)
        self._thread.start()

    def _progress(self, done: int, total: int) -> None:
        self.done, self.total = int(done), int(total)

    def _run(self) -> None:
        try:
            self.result = self._work(self._progress, self._cancel.is_set)
        except BaseException as exc:  # reported to the user by poll()/wait()
            self.error = exc
        finally:
            self.seconds = time.perf_counter() - self.started_at
            self._ended.set()

    # ---- control --------------------------------------------------------------------------
    def cancel(self) -> None:
        """Ask the work to stop at its next check; what is finished is kept."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def running(self) -> bool:
        return not self._ended.is_set()

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0

    def message(self) -> str:
        """One line for a status label."""
        if self.running:
            return f"{self.name}: {self.done} of {self.total or '?'}..."
        if self.error is not None:
            return f"{self.name} stopped: {self.error}"
        return f"{self.name} finished in {self.seconds:.1f} s."

    def poll(self) -> bool:
        """True once the work has ended; runs `finish` (once) on the calling thread then.

        Errors of the work or of `finish` are re-raised here, on the caller's thread.
        """
        if not self._ended.is_set():
            return False
        if not self._finished:
            self._finished = True
            if self.error is not None:
                raise self.error
            if self._finish is not None:
                self.finished_result = self._finish(self.result)
        return True

    def wait(self, timeout: float | None = None) -> Any:
        """Block until the work ends, run `finish`, return its value (or the work's result)."""
        if not self._ended.wait(timeout):
            raise TimeoutError(f"{self.name} did not finish within {timeout} s.")
        self.poll()
        return self.finished_result if self._finish is not None else self.result
