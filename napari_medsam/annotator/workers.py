"""The one way the dock runs work off the UI thread: a job (a generator of messages, see
`jobs`) in a napari worker, bound to a progress bar and a Cancel button.

Progress messages move the bar; every message is handed to the owner's callback on the UI
thread; Cancel sets the job's stop event, which every job checks between its steps (a slice, a
training step), so it ends cleanly with what is finished kept; `on_done(aborted)` runs when the
job ends, whichever way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

from qtpy.QtWidgets import QProgressBar, QPushButton

from ..core.errors import InputError


def _relay(job: Iterator[tuple]) -> Iterator[tuple]:
    yield from job


class JobRunner:
    """One job at a time, with its progress bar, Cancel button and the buttons it disables.

    Args:
        progress: the bar to drive (busy indicator until the first progress message).
        cancel_button: enabled while a job runs; pressing it cancels.
        start_buttons: disabled while a job runs.
        stopping: called on Cancel (to say that the job stops after its current step).
    """

    def __init__(self, progress: QProgressBar, cancel_button: QPushButton,
                 start_buttons: tuple[QPushButton, ...] = (),
                 stopping: Callable[[], None] | None = None):
        self.progress, self.cancel_button = progress, cancel_button
        self.start_buttons, self.stopping = start_buttons, stopping
        self.worker = None
        self.stop = threading.Event()  # set on Cancel: jobs running in a thread poll it
        self.done = (0, 0)
        self.name = ""
        cancel_button.setEnabled(False)
        cancel_button.clicked.connect(lambda _=False: self.cancel())

    @property
    def running(self) -> bool:
        return self.worker is not None

    def start(self, name: str, job: Callable[[threading.Event], Iterator[tuple]],
              on_message: Callable[[tuple], None],
              on_done: Callable[[bool], None] | None = None) -> None:
        """Run `job(stop_event)` in a worker; raises InputError when a job runs already."""
        from napari.qt.threading import create_worker

        if self.worker is not None:
            raise InputError(f"{self.name} is running: wait for it or press Cancel.")
        self.stop = threading.Event()
        worker = create_worker(_relay, job(self.stop), _start_thread=False, _ignore_errors=True)
        worker.yielded.connect(lambda msg: self._message(worker, msg, on_message))
        worker.finished.connect(lambda: self._finished(worker, on_done))
        self.worker, self.name, self.done = worker, name, (0, 0)
        for button in self.start_buttons:
            button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setRange(0, 0)
        worker.start()

    def cancel(self) -> None:
        """Stop after the step being computed; what is finished is kept."""
        if self.worker is not None:
            if self.stopping is not None:
                self.stopping()
            self.stop.set()

    def wait(self, timeout_s: float) -> None:
        """Block (processing Qt events) until the job ends; for scripts and tests."""
        wait_while(lambda: self.running, timeout_s, self.name or "the job")

    def _message(self, worker, msg: tuple, on_message) -> None:
        if worker is not self.worker:
            return
        if msg[0] == "progress":
            done, total = int(msg[1]), int(msg[2])
            self.done = (done, total)
            self.progress.setRange(0, max(total, 1))
            self.progress.setValue(done)
        on_message(msg)

    def _finished(self, worker, on_done) -> None:
        if worker is not self.worker:
            return
        self.worker = None
        for button in self.start_buttons:
            button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        done, total = self.done
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)
        if on_done is not None:
            on_done(self.stop.is_set())


def wait_while(busy: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Block, processing Qt events, while `busy()` is true; for scripts and tests."""
    from qtpy.QtCore import QCoreApplication, QElapsedTimer

    timer = QElapsedTimer()
    timer.start()
    while busy() and timer.elapsed() < timeout_s * 1000:
        QCoreApplication.processEvents()
        time.sleep(0.002)  # not a spin: the worker being waited for needs the cores
    if busy():
        raise TimeoutError(f"{what} did not finish in time")
