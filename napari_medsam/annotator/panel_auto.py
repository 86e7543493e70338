"""Automatic box of the dock: a trained head segments the slice on screen, or the whole volume.

Each structure the head finds is written as its own object, over background only, with the
Session's one label-id policy (`Session.commit_structures`): a structure keeps its own value
(1 LV, 2 myocardium, 3 LA) when that id is free, else the next free id, and the same id from then
on. "Segment volume" runs the head on every slice as a job (progress bar, Cancel keeps the
slices done) and makes each structure consistent across slices (`core.autoseg.volume`). The user
then corrects with clicks and boxes.
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtWidgets import QComboBox, QFileDialog, QGroupBox, QVBoxLayout

from ..core.errors import InputError
from .controls import button, row
from .host import Host
from .jobs import in_thread, release, say_job_error

PICK = "__pick__"


def _shipped_heads() -> dict[str, str]:
    from ..core.autoseg.store import list_heads

    return {name: str(path) for name, path in list_heads().items()}


class AutoPanel:
    """Head choice, "Segment slice" and "Segment volume", run through the dock (`host`)."""

    def __init__(self, host: Host):
        from ..core.autoseg.store import describe

        self.host = host
        self._heads: dict[str, object] = {}  # folder -> loaded head
        self.ann = None  # the annotation a volume job writes into
        self.group = QGroupBox("Automatic")
        box = QVBoxLayout(self.group)
        self.head_combo = QComboBox()
        for name, folder in _shipped_heads().items():
            self.head_combo.addItem(name, folder)
            self.head_combo.setItemData(self.head_combo.count() - 1, describe(Path(folder)), 3)
        self.head_combo.addItem("Head folder…", PICK)
        self.head_combo.activated.connect(self._on_head)
        self.head_combo.setToolTip("A trained automatic-segmentation head for this kind of image.")
        box.addWidget(self.head_combo)
        box.addLayout(row(
            button("Segment slice", self.run,
                   "Segment every structure the head knows on the slice on screen."),
            button("Segment volume", self.run_volume,
                   "Segment every slice, then make each structure consistent across slices "
                   "(in the background; Cancel keeps the slices done)."),
        ))

    def _on_head(self, index: int) -> None:
        if self.head_combo.itemData(index) != PICK:
            return
        folder = QFileDialog.getExistingDirectory(self.group, "Automatic-segmentation head folder")
        if folder:
            self.add_head(folder)

    def add_head(self, folder: str) -> None:
        """Offer (and select) a head folder."""
        self.head_combo.insertItem(self.head_combo.count() - 1,
                                   folder.rstrip("/").split("/")[-1], folder)
        self.head_combo.setCurrentIndex(self.head_combo.count() - 2)

    def run(self) -> list[int] | None:
        """Segment the slice on screen; returns the ids written (None when nothing ran)."""
        return self.host.guard(self._run)

    def _folder(self) -> str:
        if self.host.runner.running:
            raise InputError(f"{self.host.runner.name} is running: wait for it or press Cancel.")
        folder = self.head_combo.currentData()
        if folder in (None, PICK):
            raise InputError("No automatic head is chosen: pick a head folder (heads are "
                             "trained with `napari-medsam train-head`).")
        return folder

    def _head(self, folder: str, session):
        if folder not in self._heads:
            from ..core.autoseg import load_head

            self._heads[folder] = load_head(folder, session.predictor)
        return self._heads[folder]

    def _run(self) -> list[int] | None:
        ann = self.host.annotation()
        folder = self._folder()
        if not ann.is_ready():
            self.host.notify("info", "Computing the embedding of this slice first; press "
                                     "Segment slice again when it is ready.")
            self.host.request_embedding()
            return None
        session = ann.session_with_labels()
        head = self._head(folder, session)
        result = session.auto(head, z=ann.current_z, commit=False)
        if not result.any():
            raise InputError("The head found no structure on this slice.")
        ids = session.commit_structures(result, head, ann.current_z)
        ann.labels.refresh()
        self.host.objects_changed()
        names = dict(zip(head.structures, head.names, strict=False))
        what = ", ".join(f"{names.get(v, v)} -> {i}" for v, i in ids.items())
        self.host.notify("info", f"Automatic: {what}. Correct them with clicks and boxes.")
        return [int(v) for v in ids.values()]

    def run_volume(self) -> None:
        """Segment the whole volume in the background (progress bar, Cancel)."""
        self.host.guard(self._start_volume)

    def _start_volume(self) -> None:
        ann = self.host.annotation()
        if not ann.is_volume:
            raise InputError("This is a 2D image: use Segment slice.")
        folder = self._folder()
        if ann.session is None:
            self.host.request_embedding()
            raise InputError("Computing the first embedding; press Segment volume again when "
                             "it is ready.")
        session = ann.session_with_labels()
        head = self._head(folder, session)

        def work(emit, stopped):
            return session.auto_volume(head, progress=lambda d, t: emit(("progress", d, t)),
                                       cancel=stopped)

        self.ann, ann.busy = ann, True
        self.host.runner.start("Automatic segmentation", lambda stop: in_thread(work, stop),
                               self._message, self._ended)

    def _message(self, msg: tuple) -> None:
        if msg[0] == "progress" and self.ann is not None:
            self.ann.labels.refresh()
        elif msg[0] == "done":
            found = [int(v) for v in set(msg[1].ravel().tolist()) if v]
            self.host.notify("info", f"Automatic: {len(found)} structure(s) on the volume. "
                                     "Correct them with clicks and boxes.")
        elif msg[0] == "error":
            say_job_error(self.host, msg[1], "Automatic segmentation",
                          "Automatic segmentation stopped: the slices done are kept.",
                          "Your labels are kept.")

    def _ended(self, aborted: bool) -> None:
        ann, self.ann = self.ann, None
        release(self.host, ann)
