"""Prompts box of the dock: click / box mode, negative clicks, accept, undo, clear, next, id.

The buttons call the dock's verbs (the same ones its keyboard shortcuts call); the box holds the
two settings the verbs read: negative clicks and the id of the next object.
"""

from __future__ import annotations

from qtpy.QtWidgets import QCheckBox, QGroupBox, QLabel, QSpinBox, QVBoxLayout

from .controls import button, row

HINT = ("Left click: include. Right click or Ctrl+click: exclude. Box mode: drag a box. "
        "Enter/C accept, Esc clear, Ctrl+Z undo, N next object.")


class PromptsPanel:
    """The Prompts group box; `widget` is the dock (its verbs are bound to the buttons)."""

    def __init__(self, widget):
        self.group = QGroupBox("Prompts")
        box = QVBoxLayout(self.group)
        box.addLayout(row(
            button("Click mode", widget.click_mode, "Select the clicks layer (add mode)."),
            button("Box mode", widget.box_mode, "Select the boxes layer (rectangles)."),
        ))
        self.negative_check = QCheckBox("Clicks exclude (negative)")
        self.negative_check.toggled.connect(widget.set_negative_mode)
        box.addWidget(self.negative_check)
        hint = QLabel(HINT)
        hint.setWordWrap(True)
        box.addWidget(hint)
        box.addLayout(row(
            button("Accept", widget.accept, "Write the object into the labels (Enter or C)."),
            button("Undo", widget.undo, "Remove the last prompt of this slice (Ctrl+Z)."),
            button("Clear", widget.clear, "Discard the object being drawn (Esc)."),
            button("Next object", widget.next_object,
                   "Accept if there is a mask, then start anew (N)."),
        ))
        self.label_spin = QSpinBox()
        self.label_spin.setRange(0, 65535)
        self.label_spin.setSpecialValueText("next free")
        self.label_spin.setToolTip("Id written on Accept: 'next free' makes a new object; an "
                                   "existing id extends that object (other objects are never "
                                   "overwritten).")
        box.addLayout(row(QLabel("Object id"), self.label_spin))

    def object_id(self) -> int | None:
        """The chosen id, or None for the next free one."""
        return self.label_spin.value() or None

    def reset_object_id(self) -> None:
        self.label_spin.setValue(0)
