"""Volume tools of the dock widget: propagate an object through the slices, fill the gaps.

Shown only when the core Session has `propagate` (core/propagation.py). Both verbs run in a
worker thread with the widget's progress bar and Cancel; the core writes straight into the
labels layer's array, over background only, and the layer is refreshed as slices arrive. While
they run, new prompts stay in their layers and are played afterwards.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QComboBox, QGroupBox, QHBoxLayout, QPushButton, QVBoxLayout

from .core.errors import CancelledError, InputError, MedSAMError
from .core.session import Session

KINDS = {"volume (slices)": "volume", "2D+t (frames)": "time"}


def _call(fn):
    """Run fn in the worker; hand back ("ok", result) or ("error", exc), never raise."""
    try:
        return "ok", fn()
    except Exception as exc:  # shown in plain words by the widget
        return "error", exc


class VolumeTools:
    """Propagate / Interpolate buttons bound to a MedSAMWidget."""

    def __init__(self, widget):
        self.w = widget
        self.available = hasattr(Session, "propagate") and hasattr(Session, "interpolate")
        self.running = False
        self.stop = False
        self.progress = (0, 0)
        self.ann = None
        self.timer = QTimer()
        self.timer.setInterval(150)
        self.timer.timeout.connect(self._tick)

    def build(self, root) -> None:
        group = QGroupBox("Volume")
        box = QVBoxLayout(group)
        self.kind_combo = QComboBox()
        self.kind_combo.addItems(KINDS)
        self.kind_combo.setToolTip("A CT/MRI volume, or a 2D+t sequence (echo cine): frames "
                                   "follow a moving object more loosely.")
        box.addWidget(self.kind_combo)
        row = QHBoxLayout()
        for text, slot, tip in (
            ("Propagate", self.propagate, "Accept the object if it is drawn, then follow it "
             "slice by slice up and down until it ends (Cancel keeps what is done)."),
            ("Interpolate", self.interpolate, "Fill the slices between annotated slices of the "
             "object (id in 'Object id', or the only object)."),
        ):
            button = QPushButton(text)
            button.setToolTip(tip)
            button.clicked.connect(lambda _=False, s=slot: s())
            row.addWidget(button)
        box.addLayout(row)
        root.addWidget(group)
        group.setVisible(self.available)

    # ---- verbs -------------------------------------------------------------------------------
    def propagate(self) -> None:
        self._run("propagate")

    def interpolate(self) -> None:
        self._run("interpolate")

    def _run(self, verb: str) -> None:
        w = self.w
        ann = w._guard(w.annotation)
        if ann is None:
            return
        try:
            fn = self._prepare(ann, verb)
        except MedSAMError as exc:
            w.notify("warning", str(exc))
            return
        from napari.qt.threading import create_worker

        worker = create_worker(_call, fn, _start_thread=False, _ignore_errors=True)
        worker.returned.connect(lambda out: self._done(ann, verb, *out))
        worker.finished.connect(lambda: self._finished(worker))
        self.running, self.stop, self.progress, self.ann = True, False, (0, 0), ann
        ann.busy = True
        w.worker = worker
        w.compute_button.setEnabled(False)
        w.cancel_button.setEnabled(True)
        w.progress.setRange(0, 0)
        w.status.setText(f"{verb.capitalize()}…")
        self.timer.start()
        worker.start()

    def _prepare(self, ann, verb: str):
        """Check the state on the UI thread and return the call the worker makes."""
        if not ann.is_volume:
            raise InputError("Propagation and interpolation need a volume or a 2D+t sequence; "
                             "this is a 2D image.")
        if self.w.worker is not None:
            raise InputError("Embeddings are being computed: wait for them or press Cancel.")
        if ann.session is None:
            raise InputError("Draw the object on one slice first (or compute the embeddings).")
        label = self.w.label_spin.value() or None
        if ann.drafts:
            label = ann.commit(label)  # the drawn object is accepted first, then followed
            self.w.label_spin.setValue(0)
        session, settings = ann.session, KINDS[self.kind_combo.currentText()]
        progress = self._on_progress

        def cancel() -> bool:
            return self.stop

        if verb == "interpolate":
            return lambda: session.interpolate(label=label, progress=progress, cancel=cancel)
        z = ann.current_z
        if label is not None:
            has = np.nonzero((np.asarray(session.labels) == label).any(axis=(1, 2)))[0]
            if len(has) and z not in has:
                z = int(has[np.argmin(np.abs(has - z))])  # start where the object is
        return lambda: session.propagate(label=label, z=z, settings=settings,
                                         progress=progress, cancel=cancel)

    def _on_progress(self, done: int, total: int) -> None:  # worker thread
        self.progress = (int(done), int(total))

    def _tick(self) -> None:
        done, total = self.progress
        if total:
            self.w.progress.setRange(0, total)
            self.w.progress.setValue(done)
        if self.ann is not None:
            self.ann.labels.refresh()

    # ---- end ---------------------------------------------------------------------------------
    def _done(self, ann, verb: str, status: str, value) -> None:
        if status == "ok":
            self.w.notify("info", f"{verb.capitalize()}: {_summary(value)}")
        elif isinstance(value, CancelledError):
            kept = len(getattr(getattr(value, "result", None), "slices", []) or [])
            self.w.notify("info", f"{verb.capitalize()} stopped: the {kept} slices done are kept.")
        elif isinstance(value, MedSAMError):
            self.w.notify("warning", str(value))
        else:
            self.w.notify("error", f"{verb.capitalize()} failed ({type(value).__name__}: "
                                   f"{value}). Your labels and prompts are kept.")

    def _finished(self, worker) -> None:
        self.timer.stop()
        self._tick()
        ann, self.ann, self.running = self.ann, None, False
        w = self.w
        if w.worker is worker:
            w.worker = None
            w.compute_button.setEnabled(True)
            w.cancel_button.setEnabled(False)
        if ann is not None:
            ann.busy = False
            ann.resume()


def _summary(result) -> str:
    summary = getattr(result, "summary", None)
    if callable(summary):
        return summary()
    return f"{len(getattr(result, 'slices', []))} slices written."
