"""The controls of the MedSAM dock widget, laid out once; behaviour lives in `_widget`."""

from __future__ import annotations

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ._widget_options import OptionsBox
from .core.intensity import CT_WINDOWS

PRESETS = ("auto", "as-is", "mri", *CT_WINDOWS, "ct-custom:40,400")
HINT = ("Left click: include. Right click or Ctrl+click: exclude. Box mode: drag a box. "
        "Enter/C accept, Esc clear, Ctrl+Z undo, N next object.")


def _button(text: str, slot, tip: str = "") -> QPushButton:
    button = QPushButton(text)
    button.clicked.connect(lambda _=False: slot())
    if tip:
        button.setToolTip(tip)
    return button


def wait_while(busy, timeout_s: float, what: str) -> None:
    """Block, processing Qt events, while `busy()` is true; for scripts and tests."""
    from qtpy.QtCore import QCoreApplication, QElapsedTimer

    timer = QElapsedTimer()
    timer.start()
    while busy() and timer.elapsed() < timeout_s * 1000:
        QCoreApplication.processEvents()
    if busy():
        raise TimeoutError(f"{what} did not finish in time")


def _row(*widgets) -> QHBoxLayout:
    row = QHBoxLayout()
    for widget in widgets:
        row.addWidget(widget)
    return row


def build_panel(w) -> None:
    """Create the widget's controls as attributes of `w` and connect them to its methods."""
    outer = QVBoxLayout(w)  # a scroll area: no control is squeezed on a small screen
    outer.setContentsMargins(0, 0, 0, 0)
    scroll = QScrollArea()
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    inner = QWidget()
    scroll.setWidget(inner)
    outer.addWidget(scroll)
    root = QVBoxLayout(inner)
    form = QFormLayout()
    w.image_combo = QComboBox()
    w.image_combo.currentIndexChanged.connect(w._on_image_selected)
    form.addRow("Image", w.image_combo)
    w.options = OptionsBox(w, form)
    w.preset_combo = QComboBox()
    w.preset_combo.setEditable(True)
    w.preset_combo.addItems(PRESETS)
    w.preset_combo.setToolTip("How intensities are mapped before the model sees them: a CT "
                              "window, MRI percentiles, or the image range (auto).")
    w.preset_combo.activated.connect(lambda _: w._on_settings_changed())
    w.preset_combo.lineEdit().editingFinished.connect(w._on_settings_changed)
    form.addRow("Intensity", w.preset_combo)
    root.addLayout(form)

    w.compute_button = _button("Compute embeddings", w.compute_embeddings,
                               "Run the image encoder (a volume: the slice on screen first, then "
                               "the others). Clicks then answer at once.")
    w.cancel_button = _button("Cancel", w.cancel, "Stop after the slice being computed.")
    w.cancel_button.setEnabled(False)
    root.addLayout(_row(w.compute_button, w.cancel_button))
    w.progress = QProgressBar()
    w.progress.setRange(0, 1)
    w.progress.setValue(0)
    root.addWidget(w.progress)
    w.status = QLabel("Choose an image, then click on the object or draw a box.")
    w.status.setWordWrap(True)
    root.addWidget(w.status)

    prompts = QGroupBox("Prompts")
    box = QVBoxLayout(prompts)
    box.addLayout(_row(_button("Click mode", w.click_mode, "Select the clicks layer (add mode)."),
                       _button("Box mode", w.box_mode, "Select the boxes layer (rectangles).")))
    w.negative_check = QCheckBox("Clicks exclude (negative)")
    w.negative_check.toggled.connect(w._on_negative)
    box.addWidget(w.negative_check)
    hint = QLabel(HINT)
    hint.setWordWrap(True)
    box.addWidget(hint)
    box.addLayout(_row(
        _button("Accept", w.accept, "Write the object into the labels (Enter or C)."),
        _button("Undo", w.undo, "Remove the last prompt of this slice (Ctrl+Z)."),
        _button("Clear", w.clear, "Discard the object being drawn (Esc)."),
        _button("Next object", w.next_object, "Accept if there is a mask, then start anew (N)."),
    ))
    w.label_spin = QSpinBox()
    w.label_spin.setRange(0, 65535)
    w.label_spin.setSpecialValueText("next free")
    w.label_spin.setToolTip("Id written on Accept: 'next free' makes a new object; an existing "
                            "id extends that object (other objects are never overwritten).")
    box.addLayout(_row(QLabel("Object id"), w.label_spin))
    root.addWidget(prompts)
    w.volume.build(root)
    w.auto.build(root)
    w.finetune.build(root)

    root.addWidget(_button("Save labels…", w._save_dialog,
                           "NIfTI with the image's geometry, or PNG for a 2D image."))
    root.addStretch(1)
