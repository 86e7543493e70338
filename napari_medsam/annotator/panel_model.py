"""Model rows of the dock: model or checkpoint, its kind, device, adapter, execution profile.

They are turned into one `core.runtime.RuntimeSpec`, the same description the CLI and Slicer
build, so the dock runs exactly what `napari-medsam segment --profile ... --adapter ...` runs.
"""

from __future__ import annotations

from qtpy.QtWidgets import QComboBox, QFileDialog, QFormLayout, QWidget

from ..core.profiles import CHOICES
from ..core.runtime import RuntimeSpec
from .engine import adapter_choices

BUILT_IN = "litemedsam"
PICK = "__pick__"
MODEL_TYPES = ("guess from file", "litemedsam", "sam_vit_b", "medsam_vit_b")


def _devices() -> list[str]:
    try:
        import torch
    except ImportError:  # the light install: ONNX Runtime on the CPU
        return ["cpu"]
    return ["cuda", "cpu"] if torch.cuda.is_available() else ["cpu"]


class ModelPanel:
    """Adds the model rows to `form`; `spec()` reads them; `changed()` is called on a change.

    Args:
        parent: the dock (parent of file dialogs).
        form: the form layout to add rows to.
        changed: called after any setting changed.
    """

    def __init__(self, parent: QWidget, form: QFormLayout, changed):
        self.parent, self.form, self.changed = parent, form, changed
        self.model_combo = QComboBox()
        self.model_combo.addItem("LiteMedSAM (built in)", BUILT_IN)
        self.model_combo.addItem("Checkpoint file…", PICK)
        self.model_combo.setToolTip("The built-in LiteMedSAM, or a SAM / MedSAM checkpoint file.")
        self._last_model = 0
        self.model_combo.activated.connect(self._on_model)
        form.addRow("Model", self.model_combo)

        self.type_combo = QComboBox()
        self.type_combo.addItems(MODEL_TYPES)
        self.type_combo.activated.connect(lambda _: changed())
        form.addRow("Model kind", self.type_combo)
        self._show_row(self.type_combo, False)

        self.device_combo = QComboBox()
        self.device_combo.addItems(_devices())
        self.device_combo.activated.connect(lambda _: changed())
        form.addRow("Device", self.device_combo)
        self._show_row(self.device_combo, self.device_combo.count() > 1)

        self.adapter_combo = QComboBox()
        self.adapter_combo.addItem("default", None)
        self.adapter_combo.addItem("none (base model)", "none")
        for label, folder in adapter_choices():
            self.adapter_combo.addItem(label, folder)
        self.adapter_combo.setToolTip("LoRA adapter on the model. 'default': as the model loads "
                                      "(LiteMedSAM: the shipped click adapter).")
        self.adapter_combo.addItem("Adapter folder…", PICK)
        self._last_adapter = 0
        self.adapter_combo.activated.connect(self._on_adapter)
        form.addRow("Adapter", self.adapter_combo)

        self.profile_combo = QComboBox()
        self.profile_combo.addItems(CHOICES)
        self.profile_combo.setToolTip("auto (torch on a GPU, else the most accurate ONNX "
                                      "Runtime profile within the latency budget here), torch, "
                                      "or ONNX Runtime on the CPU: accurate, balanced, fast "
                                      "(see docs/performance.md).")
        self.profile_combo.activated.connect(lambda _: changed())
        form.addRow("Profile", self.profile_combo)

    def _show_row(self, field, visible: bool) -> None:
        field.setVisible(visible)
        label = self.form.labelForField(field)
        if label is not None:
            label.setVisible(visible)

    def _on_model(self, index: int) -> None:
        if self.model_combo.itemData(index) == PICK:
            path, _ = QFileDialog.getOpenFileName(
                self.parent, "Model checkpoint", "", "Checkpoints (*.pth *.pt *.ckpt);;All (*)")
            if not path:
                self.model_combo.setCurrentIndex(self._last_model)
                return
            self.add_checkpoint(path)
        self._last_model = self.model_combo.currentIndex()
        self._show_row(self.type_combo, self.model_combo.currentData() != BUILT_IN)
        self.changed()

    def add_checkpoint(self, path: str) -> None:
        """Offer (and select) a checkpoint file as the model."""
        self.model_combo.insertItem(self.model_combo.count() - 1, path.split("/")[-1], path)
        self.model_combo.setCurrentIndex(self.model_combo.count() - 2)

    def _on_adapter(self, index: int) -> None:
        if self.adapter_combo.itemData(index) == PICK:
            folder = QFileDialog.getExistingDirectory(self.parent, "Adapter folder")
            if not folder:
                self.adapter_combo.setCurrentIndex(self._last_adapter)
                return
            self.add_adapter(folder)
            return
        self._last_adapter = self.adapter_combo.currentIndex()
        self.changed()

    def add_adapter(self, folder: str, label: str | None = None) -> None:
        """Offer (or find) an adapter folder, select it and apply it."""
        index = self.adapter_combo.findData(folder)
        if index < 0:
            index = self.adapter_combo.count() - 1  # before "Adapter folder…"
            self.adapter_combo.insertItem(index, label or folder.rstrip("/").split("/")[-1],
                                          folder)
        self.adapter_combo.setCurrentIndex(index)
        self._last_adapter = index
        self.changed()

    def spec(self) -> RuntimeSpec:
        """The chosen model as a RuntimeSpec."""
        name = self.model_combo.currentData() or BUILT_IN
        kind = self.type_combo.currentText()
        adapter = self.adapter_combo.currentData()
        return RuntimeSpec(
            model=str(name),
            model_type=None if name == BUILT_IN or kind == MODEL_TYPES[0] else kind,
            device=self.device_combo.currentText() or "cpu",
            profile=self.profile_combo.currentText() or "auto",
            adapter=None if adapter == PICK else adapter,
        )
