"""The MedSAM dock widget: pick an image, compute embeddings, click/box, accept, save.

Layers in, Session calls out: the widget only translates napari events and buttons into core
verbs (through `Annotation`) and shows the masks. Long work (model loading, embeddings) runs in
a `napari.qt.threading` worker with a progress bar and a Cancel button.
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QFileDialog, QWidget

from ._llvm_guard import avoid_llvm_clash  # first of ours: runs the guard before torch loads
from ._widget_annotation import Annotation
from ._widget_auto import AutoTools
from ._widget_engine import EmbedRequest, Engine, ModelSpec, safe_embed_job
from ._widget_finetune import FinetuneTools
from ._widget_ui import build_panel, wait_while
from ._widget_volume import VolumeTools
from .core.errors import InputError, MedSAMError
from .core.intensity import get_preset, suggest_preset

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
        avoid_llvm_clash()  # the canvas may have loaded LLVM since import: see _llvm_guard
        self.viewer = napari_viewer
        self.engine = engine if engine is not None else Engine()
        self.annotations: dict[int, Annotation] = {}
        self.worker = None
        self._failed = False
        self.progress_done = (0, 0)
        self.messages: list[tuple[str, str]] = []
        self.volume = VolumeTools(self)
        self.auto = AutoTools(self)
        self.finetune = FinetuneTools(self)
        build_panel(self)
        layers = self.viewer.layers
        layers.events.inserted.connect(self._refresh_images)
        layers.events.removed.connect(self._on_layer_removed)
        self.viewer.dims.events.current_step.connect(self._on_dims)
        for name, keys in SHORTCUTS.items():
            for key in keys:
                if key != "C":  # C is auto-contrast on image layers: bound on prompt layers only
                    self.viewer.bind_key(key, self._key(name), overwrite=True)
        self._refresh_images()

    # ---- UI ----------------------------------------------------------------------------------
    def _key(self, name: str):
        def handler(_):
            getattr(self, name)()

        return handler

    # ---- messages ----------------------------------------------------------------------------
    def notify(self, level: str, text: str) -> None:
        """Show a napari notification (and the status line) in plain words."""
        from napari.utils import notifications

        self.messages.append((level, text))
        self.status.setText(text)
        {"error": notifications.show_error, "warning": notifications.show_warning}.get(
            level, notifications.show_info)(text)

    def _guard(self, fn, *args):
        try:
            return fn(*args)
        except MedSAMError as exc:
            self.notify("error" if not isinstance(exc, InputError) else "warning", str(exc))
        return None

    # ---- images ------------------------------------------------------------------------------
    def _own_layers(self) -> set[int]:
        return {id(layer) for a in self.annotations.values() for layer in a.helper_layers()}

    def _image_layers(self) -> list:
        own = self._own_layers()
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

    def _on_image_selected(self, *_) -> None:
        layer = self.image_layer
        if layer is None:
            return
        if id(layer) in self.annotations:  # back to an image: its own intensity preset
            self.preset_combo.setCurrentText(self.annotations[id(layer)].preset)
            return
        modality = (layer.metadata or {}).get("modality", "")
        try:
            from ._widget_geometry import image_array

            data, _ = image_array(layer)
            preset = "auto" if getattr(layer, "rgb", False) else suggest_preset(data, modality).name
        except MedSAMError:
            preset = "auto"
        self.preset_combo.setCurrentText(preset)
        self._guard(self.annotation)

    def _on_layer_removed(self, event) -> None:
        """The image gone: its prompt and preview layers go too (labels stay). A helper layer
        deleted by hand: that annotation starts afresh on the next prompt."""
        gone = event.value
        for key, ann in list(self.annotations.items()):
            if gone is ann.image or any(gone is lay for lay in ann.helper_layers()):
                self.annotations.pop(key)
                if self.worker is not None:
                    self.cancel()
                if gone is ann.image:
                    ann.remove_layers()
        self._refresh_images()

    def annotation(self) -> Annotation:
        """The Annotation of the chosen image (made on first use). Raises InputError."""
        layer = self.image_layer
        if layer is None:
            raise InputError("No image is selected: open an image or volume (File > Open, or "
                             "File > Open Sample > MedSAM) and choose it under 'Image'.")
        ann = self.annotations.get(id(layer))
        if ann is None:
            ann = Annotation(self.viewer, layer, self.notify, self._request_embedding)
            ann.preset = self.preset_combo.currentText().strip() or "auto"
            self.annotations[id(layer)] = ann
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

    @property
    def current(self) -> Annotation | None:
        layer = self.image_layer
        return None if layer is None else self.annotations.get(id(layer))

    # ---- settings ----------------------------------------------------------------------------
    def spec(self) -> ModelSpec:
        return self.options.spec()

    def preset(self) -> str:
        text = self.preset_combo.currentText().strip() or "auto"
        get_preset(text)  # raises InputError with a plain message
        return text

    def _on_settings_changed(self) -> None:
        """Model, adapter or the image's preset changed: embeddings are made again."""
        preset = self._guard(self.preset)
        if preset is None:
            return
        if self.worker is not None:
            self.cancel()
        ann = self.current
        if ann is not None:
            ann.preset = preset
        spec = self.spec()
        for other in self.annotations.values():
            if other.session is not None and other.session_key != (spec, other.preset):
                other.detach()
        if ann is not None and ann.has_prompts():
            self._request_embedding()  # the drawn prompts get a mask from the new setting

    # ---- embeddings --------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self.worker is not None

    def compute_embeddings(self, all_slices: bool = True) -> None:
        """Embed the chosen image (all slices of a volume, the one on screen first)."""
        ann = self._guard(self.annotation)
        if ann is not None:
            self._guard(self._start, ann, all_slices)

    def _request_embedding(self) -> None:
        ann = self.current
        if ann is None or self.worker is not None:
            return  # a running worker embeds the slice on screen next
        self.status.setText("Computing the embedding of this slice (a second or two)…")
        self._guard(self._start, ann, False)

    def _start(self, ann: Annotation, all_slices: bool) -> None:
        from napari.qt.threading import create_worker

        avoid_llvm_clash()  # before the worker imports torchvision: see _llvm_guard
        if self.worker is not None:
            raise InputError("Embeddings are being computed already: wait or press Cancel.")
        spec, preset = self.spec(), ann.preset
        if ann.session is not None and ann.session_key != (spec, preset):
            ann.detach()
        req = EmbedRequest(self.engine, spec, ann.data, ann.is_volume, preset, ann.session,
                           all_slices, want=lambda: ann.current_z)
        worker = create_worker(safe_embed_job, req, _start_thread=False, _ignore_errors=True)
        worker.yielded.connect(lambda msg: self._on_message(ann, msg, (spec, preset)))
        worker.finished.connect(lambda: self._on_finished(worker))
        self.worker, self._failed = worker, False
        self.compute_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setRange(0, 0)
        worker.start()

    def _on_message(self, ann: Annotation, msg: tuple, key: tuple) -> None:
        kind = msg[0]
        if kind == "status":
            self.status.setText(msg[1])
        elif kind == "session":
            ann.attach(msg[1], key)
            self.finetune.bind(ann)
        elif kind == "error":
            exc, self._failed = msg[1], True
            text = str(exc) if isinstance(exc, MedSAMError) else (
                f"Computing the embedding failed ({type(exc).__name__}: {exc}). "
                "Your prompts and labels are kept.")
            self.notify("error", text)
        elif kind == "progress":
            done, total, z = msg[1:]
            self.progress_done = (done, total)
            self.progress.setRange(0, max(total, 1))
            self.progress.setValue(done)
            if z >= 0:
                ann.slice_ready(z)
                what = f"slice {z + 1}" if ann.is_volume else "image"
                self.status.setText(f"Embedding ready: {what} ({done}/{total}).")

    def cancel(self) -> None:
        """Stop embedding after the slice being computed; finished slices stay cached."""
        if self.worker is not None:
            self.status.setText("Stopping after the current slice…")
            self.volume.stop = True
            self.worker.quit()

    def _on_finished(self, worker) -> None:
        if worker is not self.worker:
            return
        self.worker = None
        self.compute_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        done, total = self.progress_done
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)
        if worker.abort_requested:
            self.notify("info", f"Embedding stopped: {done} of {total} slices are ready. Other "
                                "slices are embedded when you click on them.")
        ann = self.current
        if not self._failed and ann is not None and ann.has_prompts() and not ann.is_ready():
            self._request_embedding()  # the user moved on to a slice that is not embedded yet

    def wait(self, timeout_s: float = 120.0) -> None:
        """Block (processing Qt events) until no worker runs; for scripts and tests."""
        wait_while(lambda: self.worker is not None, timeout_s, "embedding")

    # ---- prompts and objects -----------------------------------------------------------------
    def click_mode(self) -> None:
        ann = self._guard(self.annotation)
        if ann is not None:
            self.viewer.layers.selection.active = ann.points
            ann.points.mode = "add"

    def _select_clicks(self) -> None:
        ann = self.current
        if ann is not None and ann.points in self.viewer.layers:
            self.viewer.layers.selection.active = ann.points
            ann.points.mode = "add"

    def box_mode(self) -> None:
        ann = self._guard(self.annotation)
        if ann is not None:
            self.viewer.layers.selection.active = ann.boxes
            ann.boxes.mode = "add_rectangle"

    def _on_negative(self, checked: bool) -> None:
        for ann in self.annotations.values():
            ann.negative_mode = bool(checked)

    def _on_dims(self, event=None) -> None:
        ann = self.current
        if ann is not None:
            self._guard(ann.on_slice_changed)

    def _propagating(self) -> bool:
        if self.volume.running:
            self.notify("info", "Propagation is running: wait for it or press Cancel.")
        return self.volume.running

    def accept(self) -> int | None:
        """Write the object into the labels with the next free id (or the chosen one)."""
        if self._propagating():
            return None
        ann = self.current
        if ann is None:
            self._guard(self.annotation)
            return None
        label = self._guard(ann.commit, self.label_spin.value() or None)
        if label is not None:
            self.label_spin.setValue(0)
            self.finetune.refresh()
            self.status.setText(f"Object {label} accepted. Draw the next object.")
        return label

    def next_object(self) -> None:
        """Accept the current object if it has a mask, then start a new one."""
        if self._propagating():
            return
        ann = self.current
        if ann is not None and ann.drafts:
            self.accept()
        elif ann is not None:
            ann.clear()
            self.label_spin.setValue(0)
            self.status.setText("New object: click on it or draw a box.")

    def undo(self) -> None:
        if self._propagating():
            return
        ann = self.current
        if ann is not None and not self._guard(ann.undo):
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
        """Save the chosen image's labels: NIfTI with the image's affine, or PNG for 2D."""
        from ._writer import save_labels

        ann = self._guard(self.annotation)
        if ann is None:
            return None
        written = self._guard(save_labels, path, ann.labels)
        if written is not None:
            self.notify("info", f"Labels saved to {written}.")
        return written

    def _save_dialog(self) -> None:
        ann = self._guard(self.annotation)
        if ann is None:
            return
        filters = "NIfTI (*.nii.gz *.nii)" + ("" if ann.is_volume else ";;PNG (*.png)")
        path, _ = QFileDialog.getSaveFileName(self, "Save labels", f"{ann.image.name}_labels"
                                              ".nii.gz", filters)
        if path:
            self.save_labels(path)


from ._launch import launch  # noqa: E402  (the README / demo entry point)

__all__ = ["MedSAMWidget", "launch"]
