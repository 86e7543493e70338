"""Automatic segmentation row of the dock widget: a trained head segments the slice on screen.

Shown only when the core Session has `auto` (core/autoseg). Each structure the head finds is
written as its own object, over background only: with the head's values (e.g. 1 LV, 2
myocardium, 3 LA) when those ids are still free, else with the next free ids. The user then
corrects with clicks and boxes.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import QComboBox, QFileDialog, QGroupBox, QHBoxLayout, QPushButton

from .core.errors import InputError
from .core.session import Session

PICK = "__pick__"


def _shipped_heads() -> dict[str, str]:
    try:
        from .core.autoseg import list_heads
    except ImportError:
        return {}
    return {name: str(path) for name, path in list_heads().items()}


class AutoTools:
    """Head choice + "Segment slice" button bound to a MedSAMWidget."""

    def __init__(self, widget):
        self.w = widget
        self.available = hasattr(Session, "auto")
        self._heads: dict[str, object] = {}  # folder -> loaded head

    def build(self, root) -> None:
        group = QGroupBox("Automatic")
        row = QHBoxLayout(group)
        self.head_combo = QComboBox()
        for name, folder in _shipped_heads().items():
            self.head_combo.addItem(name, folder)
        self.head_combo.addItem("Head folder…", PICK)
        self.head_combo.activated.connect(self._on_head)
        self.head_combo.setToolTip("A trained automatic-segmentation head for this kind of image.")
        button = QPushButton("Segment slice")
        button.setToolTip("Segment every structure the head knows on the slice on screen.")
        button.clicked.connect(lambda _=False: self.run())
        row.addWidget(self.head_combo, 1)
        row.addWidget(button)
        root.addWidget(group)
        group.setVisible(self.available)

    def _on_head(self, index: int) -> None:
        if self.head_combo.itemData(index) != PICK:
            return
        folder = QFileDialog.getExistingDirectory(self.w, "Automatic-segmentation head folder")
        if folder:
            self.add_head(folder)

    def add_head(self, folder: str) -> None:
        """Offer (and select) a head folder."""
        self.head_combo.insertItem(self.head_combo.count() - 1,
                                   folder.rstrip("/").split("/")[-1], folder)
        self.head_combo.setCurrentIndex(self.head_combo.count() - 2)

    def run(self) -> list[int] | None:
        """Segment the slice on screen; returns the ids written (None when nothing ran)."""
        w = self.w
        ann = w._guard(w.annotation)
        if ann is None or w._propagating():
            return None
        folder = self.head_combo.currentData()
        if folder in (None, PICK):
            w.notify("warning", "No automatic head is chosen: pick a head folder (heads are "
                                "trained with `napari-medsam train-head`).")
            return None
        if not ann.is_ready():
            w.notify("info", "Computing the embedding of this slice first; press Segment slice "
                             "again when it is ready.")
            w._request_embedding()
            return None
        return w._guard(self._segment, ann, folder)

    def _segment(self, ann, folder: str) -> list[int]:
        from .core.autoseg import load_head

        session = ann.session
        if folder not in self._heads:
            self._heads[folder] = load_head(folder, session.predictor.model)
        result = session.auto(self._heads[folder], z=ann.current_z, commit=False)
        values = [int(v) for v in np.unique(result) if v != 0]
        if not values:
            raise InputError("The head found no structure on this slice.")
        used = {int(v) for v in np.unique(np.asarray(session.labels)) if v != 0}
        ids = values if not used & set(values) else None
        written = []
        for i, value in enumerate(values):
            label = ids[i] if ids else session.next_label()
            written.append(session.commit(label=label, mask=result == value))
        ann.labels.refresh()
        self.w.finetune.refresh()
        if ann.has_prompts():
            ann.replay()  # commit() reset the session's prompts: the object being drawn stays
        head = self._heads[folder]
        names = dict(zip(getattr(head, "structures", []), getattr(head, "names", []),
                         strict=False))
        what = ", ".join(f"{names.get(v, v)} -> {i}" for v, i in zip(values, written, strict=True))
        self.w.notify("info", f"Automatic: {what}. Correct them with clicks and boxes.")
        return written
