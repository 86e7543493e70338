"""Small Qt helpers shared by the dock and its panels: a button bound to a slot, a row."""

from __future__ import annotations

from qtpy.QtWidgets import QComboBox, QHBoxLayout, QPushButton


def button(text: str, slot=None, tip: str = "") -> QPushButton:
    """A push button calling `slot()` (without Qt's `checked` argument); None: connected later
    (a `JobRunner` connects its Cancel button itself)."""
    out = QPushButton(text)
    if slot is not None:
        out.clicked.connect(lambda _=False: slot())
    if tip:
        out.setToolTip(tip)
    return out


def combo(items, tip: str = "", editable: bool = False) -> QComboBox:
    """A combo box offering `items` (the user may type another value when `editable`)."""
    out = QComboBox()
    out.setEditable(editable)
    out.addItems(list(items))
    if tip:
        out.setToolTip(tip)
    return out


def row(*widgets) -> QHBoxLayout:
    """Widgets side by side."""
    layout = QHBoxLayout()
    for widget in widgets:
        layout.addWidget(widget)
    return layout
