"""Automatic box of the dock: a trained head segments the slice on screen.

Each structure the head finds is written as its own object, over background only, with the
Session's one label-id policy (`Session.commit_structures`): a structure keeps its own value
(1 LV, 2 myocardium, 3 LA) when that id is free, else the next free id, and the same id from then
on. The user then corrects with clicks and boxes.
"""

from __future__ import annotations

from qtpy.QtWidgets import QComboBox, QFileDialog, QGroupBox, QHBoxLayout

from ..core.errors import InputError
from .controls import button
from .host import Host

PICK = "__pick__"


def _shipped_heads() -> dict[str, str]:
    from ..core.autoseg.store import list_heads

    return {name: str(path) for name, path in list_heads().items()}


class AutoPanel:
    """Head choice + "Segment slice", run through the dock (`host`)."""

    def __init__(self, host: Host):
        self.host = host
        self._heads: dict[str, object] = {}  # folder -> loaded head
        self.group = QGroupBox("Automatic")
        line = QHBoxLayout(self.group)
        self.head_combo = QComboBox()
        for name, folder in _shipped_heads().items():
            self.head_combo.addItem(name, folder)
        self.head_combo.addItem("Head folder…", PICK)
        self.head_combo.activated.connect(self._on_head)
        self.head_combo.setToolTip("A trained automatic-segmentation head for this kind of image.")
        line.addWidget(self.head_combo, 1)
        line.addWidget(button("Segment slice", self.run,
                              "Segment every structure the head knows on the slice on screen."))

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

    def _run(self) -> list[int] | None:
        ann = self.host.annotation()
        if self.host.runner.running:
            raise InputError(f"{self.host.runner.name} is running: wait for it or press Cancel.")
        folder = self.head_combo.currentData()
        if folder in (None, PICK):
            raise InputError("No automatic head is chosen: pick a head folder (heads are "
                             "trained with `napari-medsam train-head`).")
        if not ann.is_ready():
            self.host.notify("info", "Computing the embedding of this slice first; press "
                                     "Segment slice again when it is ready.")
            self.host.request_embedding()
            return None
        session = ann.session_with_labels()
        if folder not in self._heads:
            from ..core.autoseg import load_head

            self._heads[folder] = load_head(folder, session.predictor)
        head = self._heads[folder]
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
