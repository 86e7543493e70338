"""The MedSAM dock widget: pick an image, compute embeddings, click/box, accept, save.

Layers in, Session calls out: the dock translates napari events, keys and buttons into core verbs
(through `Annotation`) and shows the masks. It is the `Host` its panels talk to (model, prompts,
volume, automatic, fine-tune); long work runs through one `JobRunner` with the progress bar and
the Cancel button.
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QLabel,
    QProgressBar,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from ..core.errors import InputError, MedSAMError
from ..core.intensity import CT_WINDOWS, get_preset, suggest_preset
from ..core.report import user_message
from ..core.runtime import RuntimeSpec
from .annotation import Annotation
from .controls import button, combo, row
from .engine import Engine
from .jobs import EmbedRequest, embed_job
from .llvm_guard import avoid_llvm_clash  # nothing above imports torch: see llvm_guard
from .panel_auto import AutoPanel
from .panel_finetune import FinetunePanel
from .panel_model import ModelPanel
from .panel_prompts import PromptsPanel
from .panel_volume import VolumePanel
from .workers import JobRunner

PRESETS = ("auto", "as-is", "mri", *CT_WINDOWS, "ct-custom:40,400")
SHORTCUTS = {  # napari key names; C is bound on the prompt layers only (auto-contrast on images)
    "accept": ("Enter", "C"),
    "clear": ("Escape",),
    "undo": ("Control-Z",),
    "next_object": ("N",),
}


class MedSAMWidget(QWidget):
    """Dock widget for interactive LiteMedSAM annotation of 2D images and 3D volumes."""

    def __init__(self, napari_viewer, engine: Engine | None = None):
        super().__init__()
        avoid_llvm_clash()  # the canvas may have loaded LLVM since import: see llvm_guard
        self.viewer = napari_viewer
        own_engine = engine is None
        self.engine = engine if engine is not None else Engine()
        self._annotations: dict[int, Annotation] = {}
        self._failed = False
        self.messages: list[tuple[str, str]] = []
        self._build()
        layers = self.viewer.layers
        layers.events.inserted.connect(self._refresh_images)
        layers.events.removed.connect(self._on_layer_removed)
        self.viewer.dims.events.current_step.connect(self._on_dims)
        for name, keys in SHORTCUTS.items():
            for key in keys:
                if key != "C":  # C is auto-contrast on image layers: bound on prompt layers only
                    self.viewer.bind_key(key, self._key(name), overwrite=True)
        self._refresh_images()
        if own_engine:  # napari opened the dock: have the model ready before the first image
            self.engine.warm_in_background(self.spec())

    def _build(self) -> None:
        outer = QVBoxLayout(self)  # a scroll area: no control is squeezed on a small screen
        outer.setContentsMargins(0, 0, 0, 0)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        inner = QWidget()
        scroll.setWidget(inner)
        outer.addWidget(scroll)
        root = QVBoxLayout(inner)
        form = QFormLayout()
        self.image_combo = QComboBox()
        self.image_combo.currentIndexChanged.connect(self._on_image_selected)
        form.addRow("Image", self.image_combo)
        self.model = ModelPanel(self, form, self._on_settings_changed)
        self.preset_combo = combo(PRESETS, "How intensities are mapped before the model sees "
                                  "them: a CT window, MRI percentiles, or the image range (auto).",
                                  True)
        self.preset_combo.activated.connect(lambda _: self._on_settings_changed())
        self.preset_combo.lineEdit().editingFinished.connect(self._on_settings_changed)
        form.addRow("Intensity", self.preset_combo)
        root.addLayout(form)
        self.compute_button = button("Compute embeddings", self.compute_embeddings,
                                     "Run the image encoder (a volume: the slice on screen first, "
                                     "then the others). Clicks then answer at once.")
        self.cancel_button = button("Cancel", None, "Stop after the slice being computed.")
        root.addLayout(row(self.compute_button, self.cancel_button))
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        root.addWidget(self.progress)
        self.runner = JobRunner(self.progress, self.cancel_button, (self.compute_button,),
                                lambda: self.status.setText("Stopping after the current slice…"))
        self.status = QLabel("Choose an image, then click on the object or draw a box.")
        self.status.setWordWrap(True)
        root.addWidget(self.status)
        self.prompts = PromptsPanel(self)
        self.volume = VolumePanel(self)
        self.auto = AutoPanel(self)
        self.finetune = FinetunePanel(self)
        for panel in (self.prompts, self.volume, self.auto, self.finetune):
            root.addWidget(panel.group)
        root.addWidget(button("Save labels…", self._save_dialog,
                              "NIfTI with the image's geometry, or PNG for a 2D image."))
        root.addStretch(1)

    def _key(self, name: str):
        def handler(_):
            getattr(self, name)()

        return handler

    # ---- the Host interface (what panels use) ------------------------------------------------
    def notify(self, level: str, text: str) -> None:
        """Show a napari notification (and the status line) in plain words."""
        from napari.utils import notifications

        self.messages.append((level, text))
        self.status.setText(text)
        {"error": notifications.show_error, "warning": notifications.show_warning}.get(
            level, notifications.show_info)(text)

    def guard(self, fn, *args):
        try:
            return fn(*args)
        except MedSAMError as exc:
            self.notify("error" if not isinstance(exc, InputError) else "warning", str(exc))
        except Exception as exc:  # a bug: the CLI's words, the traceback in a log file
            self.notify("error", user_message(exc, f"napari: {getattr(fn, '__name__', fn)}"))
        return None

    def spec(self) -> RuntimeSpec:
        return self.model.spec()

    def object_id(self) -> int | None:
        return self.prompts.object_id()

    def objects_changed(self) -> None:
        self.prompts.reset_object_id()
        self.finetune.refresh()

    def use_adapter(self, folder: str, label: str) -> None:
        self.model.add_adapter(folder, label)

    def annotations(self) -> list[Annotation]:
        return list(self._annotations.values())

    def annotation(self) -> Annotation:
        """The Annotation of the chosen image (made on first use). Raises InputError."""
        layer = self.image_layer
        if layer is None:
            raise InputError("No image is selected: open an image or volume (File > Open, or "
                             "File > Open Sample > MedSAM) and choose it under 'Image'.")
        ann = self._annotations.get(id(layer))
        if ann is None:
            ann = Annotation(self.viewer, layer, self.notify, self.request_embedding)
            ann.preset = self.preset_combo.currentText().strip() or "auto"
            self._annotations[id(layer)] = ann
            for target in (ann.points, ann.boxes):
                for name, keys in SHORTCUTS.items():
                    for key in keys:
                        target.bind_key(key, self._key(name), overwrite=True)
            ann.current_z = ann.viewer_slice()
            self._refresh_images()
            self.click_mode()
            # napari makes a just-inserted image the active layer after its insert event:
            # select the clicks layer again once that is done, so the first click lands there
            QTimer.singleShot(0, self._select_clicks)
        return ann

    # ---- images ------------------------------------------------------------------------------
    def _image_layers(self) -> list:
        own = {id(layer) for a in self._annotations.values() for layer in a.helper_layers()}
        return [lay for lay in self.viewer.layers
                if lay._type_string == "image" and id(lay) not in own]

    def _refresh_images(self, event=None) -> None:
        """Fill the image list; a newly opened image becomes the one annotated."""
        current = self.image_layer
        images = self._image_layers()
        added = getattr(event, "value", None) if getattr(event, "type", "") == "inserted" else None
        target = next((lay for lay in images if lay is added), None)
        if target is None:
            target = current if any(current is lay for lay in images) else None
        if target is None and images:
            target = images[-1]
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        for layer in images:
            self.image_combo.addItem(layer.name, id(layer))
        if target is not None:
            self.image_combo.setCurrentIndex(next(i for i, lay in enumerate(images)
                                                  if lay is target))
        self.image_combo.blockSignals(False)
        if target is not None and target is not current:
            self._on_image_selected()

    @property
    def image_layer(self):
        key = self.image_combo.currentData() if hasattr(self, "image_combo") else None
        return next((lay for lay in self.viewer.layers if id(lay) == key), None)

    @property
    def current(self) -> Annotation | None:
        layer = self.image_layer
        return None if layer is None else self._annotations.get(id(layer))

    def _on_image_selected(self, *_) -> None:
        layer = self.image_layer
        if layer is None:
            return
        if id(layer) in self._annotations:  # back to an image: its own intensity preset
            self.preset_combo.setCurrentText(self._annotations[id(layer)].preset)
            return
        modality = (layer.metadata or {}).get("modality", "")
        try:
            from .geometry import image_array

            data, _ = image_array(layer)
            preset = "auto" if getattr(layer, "rgb", False) else suggest_preset(data, modality).name
        except MedSAMError:
            preset = "auto"
        self.preset_combo.setCurrentText(preset)
        self.guard(self.annotation)

    def _on_layer_removed(self, event) -> None:
        """The image gone: its prompt and preview layers go too (labels stay). A helper layer
        deleted by hand: that annotation starts afresh on the next prompt."""
        gone = event.value
        for key, ann in list(self._annotations.items()):
            if gone is ann.image or any(gone is lay for lay in ann.helper_layers()):
                self._annotations.pop(key)
                self.cancel()
                if gone is ann.image:
                    ann.remove_layers()
        self._refresh_images()

    # ---- settings ----------------------------------------------------------------------------
    def preset(self) -> str:
        text = self.preset_combo.currentText().strip() or "auto"
        get_preset(text)  # raises InputError with a plain message
        return text

    def _on_settings_changed(self) -> None:
        """Model, adapter or the image's preset changed: embeddings are made again."""
        preset = self.guard(self.preset)
        if preset is None:
            return
        self.cancel()
        ann = self.current
        if ann is not None:
            ann.preset = preset
        spec = self.spec()
        for other in self._annotations.values():
            if other.session is not None and other.session_key != (spec, other.preset):
                other.detach()
        if ann is not None and ann.has_prompts():
            self.request_embedding()  # the drawn prompts get a mask from the new setting

    # ---- embeddings --------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """A job (embedding, propagation) runs on the dock's progress bar."""
        return self.runner.running

    def compute_embeddings(self, all_slices: bool = True) -> None:
        """Embed the chosen image (all slices of a volume, the one on screen first)."""
        ann = self.guard(self.annotation)
        if ann is not None:
            self.guard(self._start_embedding, ann, all_slices)

    def request_embedding(self) -> None:
        ann = self.current
        if ann is None or self.runner.running:
            return  # a running job embeds the slice on screen next (or replays when done)
        self.status.setText("Computing the embedding of this slice (a second or two)…")
        self.guard(self._start_embedding, ann, False)

    def _start_embedding(self, ann: Annotation, all_slices: bool) -> None:
        avoid_llvm_clash()  # before the worker imports torchvision: see llvm_guard
        spec, preset = self.spec(), ann.preset
        if ann.session is not None and ann.session_key != (spec, preset):
            ann.detach()
        req = EmbedRequest(self.engine, spec, ann.data, ann.is_volume, preset, ann.session,
                           all_slices, want=lambda: ann.current_z)
        self._failed = False
        self.runner.start("Embedding", lambda stop: embed_job(req, stop),
                          lambda msg: self._on_embed_message(ann, msg, (spec, preset)),
                          self._on_embed_done)

    def _on_embed_message(self, ann: Annotation, msg: tuple, key: tuple) -> None:
        kind = msg[0]
        if kind == "status":
            self.status.setText(msg[1])
        elif kind == "session":
            ann.attach(msg[1], key)
            self.finetune.bind(ann)
        elif kind == "error":
            exc, self._failed = msg[1], True
            text = str(exc) if isinstance(exc, MedSAMError) else (
                f"Computing the embedding failed. {user_message(exc, 'napari: embedding')} "
                "Your prompts and labels are kept.")
            self.notify("error", text)
        elif kind == "progress":
            done, total, z = msg[1:]
            if z >= 0:
                ann.slice_ready(z)
                what = f"slice {z + 1}" if ann.is_volume else "image"
                self.status.setText(f"Embedding ready: {what} ({done}/{total}).")

    def _on_embed_done(self, aborted: bool) -> None:
        done, total = self.runner.done
        if aborted:
            self.notify("info", f"Embedding stopped: {done} of {total} slices are ready. Other "
                                "slices are embedded when you click on them.")
        ann = self.current
        if not self._failed and ann is not None and ann.has_prompts() and not ann.is_ready():
            self.request_embedding()  # the user moved on to a slice that is not embedded yet

    @property
    def progress_done(self) -> tuple[int, int]:
        return self.runner.done

    def cancel(self) -> None:
        """Stop the running job after the slice being computed; finished work stays."""
        self.runner.cancel()

    def wait(self, timeout_s: float = 120.0) -> None:
        """Block until no job runs; for scripts and tests."""
        self.runner.wait(timeout_s)

    # ---- prompts and objects -----------------------------------------------------------------
    def click_mode(self) -> None:
        ann = self.guard(self.annotation)
        if ann is not None:
            self.viewer.layers.selection.active = ann.points
            ann.points.mode = "add"

    def _select_clicks(self) -> None:
        ann = self.current
        if ann is not None and ann.points in self.viewer.layers:
            self.viewer.layers.selection.active = ann.points
            ann.points.mode = "add"

    def box_mode(self) -> None:
        ann = self.guard(self.annotation)
        if ann is not None:
            self.viewer.layers.selection.active = ann.boxes
            ann.boxes.mode = "add_rectangle"

    def set_negative_mode(self, checked: bool) -> None:
        for ann in self._annotations.values():
            ann.negative_mode = bool(checked)

    def _on_dims(self, event=None) -> None:
        ann = self.current
        if ann is not None:
            self.guard(ann.on_slice_changed)

    def _propagating(self) -> bool:
        """A job writes into the labels (propagation, a volume's automatic segmentation)."""
        busy = self.volume.running or self.auto.ann is not None
        if busy:
            self.notify("info", f"{self.runner.name} is running: wait for it or press Cancel.")
        return busy

    def accept(self) -> int | None:
        """Write the object into the labels with the next free id (or the chosen one)."""
        if self._propagating():
            return None
        ann = self.current
        if ann is None:
            self.guard(self.annotation)
            return None
        label = self.guard(ann.commit, self.object_id())
        if label is not None:
            self.objects_changed()
            self.status.setText(f"Object {label} accepted. Draw the next object.")
        return label

    def next_object(self) -> None:
        """Accept the current object if it has a mask, then start a new one."""
        if self._propagating():
            return
        ann = self.current
        if ann is not None and ann.has_drafts():
            self.accept()
        elif ann is not None:
            ann.clear()
            self.prompts.reset_object_id()
            self.status.setText("New object: click on it or draw a box.")

    def undo(self) -> None:
        if self._propagating():
            return
        ann = self.current
        if ann is not None and not self.guard(ann.undo):
            self.status.setText("Nothing to undo on this slice.")

    def clear(self) -> None:
        if self._propagating():
            return
        ann = self.current
        if ann is not None:
            ann.clear()
            self.status.setText("Prompts cleared.")

    @property
    def last_latency_ms(self) -> float | None:
        ann = self.current
        return ann.latencies_ms[-1] if ann is not None and ann.latencies_ms else None

    # ---- saving ------------------------------------------------------------------------------
    def save_labels(self, path: str | Path) -> Path | None:
        """Save the chosen image's labels: NIfTI with the image's geometry, or PNG for 2D."""
        from .writer import save_labels

        ann = self.guard(self.annotation)
        if ann is None:
            return None
        written = self.guard(save_labels, path, ann.labels)
        if written is not None:
            self.notify("info", f"Labels saved to {written}.")
        return written

    def _save_dialog(self) -> None:
        ann = self.guard(self.annotation)
        if ann is None:
            return
        filters = "NIfTI (*.nii.gz *.nii)" + ("" if ann.is_volume else ";;PNG (*.png)")
        path, _ = QFileDialog.getSaveFileName(self, "Save labels", f"{ann.image.name}_labels"
                                              ".nii.gz", filters)
        if path:
            self.save_labels(path)
