"""Volume box of the dock: propagate an object through the slices, fill the gaps between slices.

Both verbs run as a job on the dock's progress bar and Cancel (`workers.JobRunner`); the core
writes straight into the Labels layer's array, over background only, and the layer is refreshed
as slices arrive. While they run, new prompts stay in their layers and are played afterwards.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import QGroupBox, QVBoxLayout

from ..core.errors import InputError
from .controls import button, combo, row
from .host import Host
from .jobs import in_thread, release, say_job_error

KINDS = {"volume (slices)": "volume", "2D+t (frames)": "time"}


class VolumePanel:
    """Propagate / Interpolate buttons, run through the dock (`host`)."""

    def __init__(self, host: Host):
        self.host = host
        self.ann = None  # the annotation a job runs on
        self.group = QGroupBox("Volume")
        box = QVBoxLayout(self.group)
        self.kind_combo = combo(KINDS, "A CT/MRI volume, or a 2D+t sequence (echo cine): frames "
                                "follow a moving object more loosely.")
        box.addWidget(self.kind_combo)
        box.addLayout(row(
            button("Propagate", self.propagate, "Accept the object if it is drawn, then follow "
                   "it slice by slice up and down until it ends (Cancel keeps what is done)."),
            button("Interpolate", self.interpolate, "Fill the slices between annotated slices "
                   "of the object (id in 'Object id', or the only object)."),
        ))

    @property
    def running(self) -> bool:
        return self.ann is not None

    def propagate(self) -> None:
        self.host.guard(self._start, "propagate")

    def interpolate(self) -> None:
        self.host.guard(self._start, "interpolate")

    def _start(self, verb: str) -> None:
        ann = self.host.annotation()
        if not ann.is_volume:
            raise InputError("Propagation and interpolation need a volume or a 2D+t sequence; "
                             "this is a 2D image.")
        if self.host.runner.running:
            raise InputError(f"{self.host.runner.name} is running: wait for it or press Cancel.")
        if ann.session is None:
            raise InputError("Draw the object on one slice first (or compute the embeddings).")
        label = self.host.object_id()
        if ann.has_drafts():
            label = ann.commit(label)  # the drawn object is accepted first, then followed
            self.host.objects_changed()
        session = ann.session_with_labels()
        if verb == "interpolate":
            def call(progress, stopped):
                return session.interpolate(label=label, progress=progress, cancel=stopped)
        else:
            z, settings = ann.current_z, KINDS[self.kind_combo.currentText()]
            if label is not None:
                has = np.nonzero((np.asarray(session.labels) == label).any(axis=(1, 2)))[0]
                if len(has) and z not in has:
                    z = int(has[np.argmin(np.abs(has - z))])  # start where the object is

            def call(progress, stopped):
                return session.propagate(label=label, z=z, settings=settings,
                                         progress=progress, cancel=stopped)

        def work(emit, stopped):
            return call(lambda done, total: emit(("progress", done, total)), stopped)

        self.ann, ann.busy = ann, True
        self.host.runner.start(verb.capitalize(), lambda stop: in_thread(work, stop),
                               lambda msg: self._message(verb, msg), self._ended)

    def _message(self, verb: str, msg: tuple) -> None:
        kind = msg[0]
        if kind == "progress" and self.ann is not None:
            self.ann.labels.refresh()
        elif kind == "done":
            self.host.notify("info", f"{verb.capitalize()}: {msg[1].summary()}")
        elif kind == "error":
            exc = msg[1]
            kept = len(getattr(getattr(exc, "result", None), "slices", []) or [])
            say_job_error(self.host, exc, verb.capitalize(),
                          f"{verb.capitalize()} stopped: the {kept} slices done are kept.",
                          "Your labels and prompts are kept.")

    def _ended(self, aborted: bool) -> None:
        ann, self.ann = self.ann, None
        release(self.host, ann)
