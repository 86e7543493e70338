"""Model choices of the dock widget: model or checkpoint, its kind, device, adapter, profile.

The adapter and profile rows appear only when core/adapters.py and core/profiles.py exist, so
the widget works before (and without) those parts.
"""

from __future__ import annotations

from qtpy.QtWidgets import QComboBox, QFileDialog, QFormLayout

from ._widget_engine import ModelSpec, adapter_choices, optional_core, profile_names

BUILT_IN = "litemedsam"
PICK = "__pick__"
MODEL_TYPES = ("guess from file", "litemedsam", "sam_vit_b", "medsam_vit_b")


def _devices() -> list[str]:
    try:
        import torch

        return ["cuda", "cpu"] if torch.cuda.is_available() else ["cpu"]
    except ImportError:  # pragma: no cover - torch is a core dependency
        return ["cpu"]


class OptionsBox:
    """Adds the model rows to `form` and turns them into a `ModelSpec`."""

    def __init__(self, widget, form: QFormLayout):
        self.widget = widget
        self.model_combo = QComboBox()
        self.model_combo.addItem("LiteMedSAM (built in)", BUILT_IN)
        self.model_combo.addItem("Checkpoint file…", PICK)
        self.model_combo.setToolTip("The built-in LiteMedSAM, or a SAM / MedSAM checkpoint file.")
        self._last_model = 0
        self.model_combo.activated.connect(self._on_model)
        form.addRow("Model", self.model_combo)

        self.type_combo = QComboBox()
        self.type_combo.addItems(MODEL_TYPES)
        self.type_combo.activated.connect(lambda _: widget._on_settings_changed())
        form.addRow("Model kind", self.type_combo)
        self._show_row(form, self.type_combo, False)

        self.device_combo = QComboBox()
        self.device_combo.addItems(_devices())
        self.device_combo.activated.connect(lambda _: widget._on_settings_changed())
        form.addRow("Device", self.device_combo)
        self._show_row(form, self.device_combo, self.device_combo.count() > 1)

        self.adapter_combo = QComboBox()
        self.adapter_combo.addItem("default", None)
        self.adapter_combo.addItem("none (base model)", "")
        for label, folder in adapter_choices():
            self.adapter_combo.addItem(label, folder)
        self.adapter_combo.setToolTip("LoRA adapter on the model. 'default': as the model loads "
                                      "(LiteMedSAM: the shipped click adapter when present).")
        self.adapter_combo.addItem("Adapter folder…", PICK)
        self._last_adapter = 0
        self.adapter_combo.activated.connect(self._on_adapter)
        form.addRow("Adapter", self.adapter_combo)
        self.has_adapters = optional_core("adapters") is not None
        self._show_row(form, self.adapter_combo, self.has_adapters)

        self.profile_combo = QComboBox()
        names = profile_names()
        self.profile_combo.addItems(names)
        self.profile_combo.activated.connect(lambda _: widget._on_settings_changed())
        form.addRow("Profile", self.profile_combo)
        self._show_row(form, self.profile_combo, bool(names))
        self.form = form

    @staticmethod
    def _show_row(form: QFormLayout, field, visible: bool) -> None:
        field.setVisible(visible)
        label = form.labelForField(field)
        if label is not None:
            label.setVisible(visible)

    def _on_model(self, index: int) -> None:
        if self.model_combo.itemData(index) == PICK:
            path, _ = QFileDialog.getOpenFileName(
                self.widget, "Model checkpoint", "", "Checkpoints (*.pth *.pt *.ckpt);;All (*)")
            if not path:
                self.model_combo.setCurrentIndex(self._last_model)
                return
            self.add_checkpoint(path)
        self._last_model = self.model_combo.currentIndex()
        custom = self.model_combo.currentData() != BUILT_IN
        self._show_row(self.form, self.type_combo, custom)
        self.widget._on_settings_changed()

    def add_checkpoint(self, path: str) -> None:
        """Offer (and select) a checkpoint file as the model."""
        self.model_combo.insertItem(self.model_combo.count() - 1, path.split("/")[-1], path)
        self.model_combo.setCurrentIndex(self.model_combo.count() - 2)

    def _on_adapter(self, index: int) -> None:
        if self.adapter_combo.itemData(index) == PICK:
            folder = QFileDialog.getExistingDirectory(self.widget, "Adapter folder")
            if not folder:
                self.adapter_combo.setCurrentIndex(self._last_adapter)
                return
            self.add_adapter(folder)
            return
        self._last_adapter = self.adapter_combo.currentIndex()
        self.widget._on_settings_changed()

    def add_adapter(self, folder: str, label: str | None = None) -> None:
        """Offer (or find) an adapter folder, select it and apply it."""
        index = self.adapter_combo.findData(folder)
        if index < 0:
            index = self.adapter_combo.count() - 1  # before "Adapter folder…"
            self.adapter_combo.insertItem(index, label or folder.rstrip("/").split("/")[-1],
                                          folder)
        self.adapter_combo.setCurrentIndex(index)
        self._last_adapter = index
        self.widget._on_settings_changed()

    def spec(self) -> ModelSpec:
        """The chosen model as a ModelSpec."""
        name = self.model_combo.currentData() or BUILT_IN
        kind = self.type_combo.currentText()
        adapter = self.adapter_combo.currentData() if self.has_adapters else None
        return ModelSpec(
            name=str(name),
            model_type=None if name == BUILT_IN or kind == MODEL_TYPES[0] else kind,
            device=self.device_combo.currentText() or "cpu",
            profile=self.profile_combo.currentText() or None,
            adapter=None if adapter == PICK else adapter,
        )
