"""One image layer under annotation: its core Session, prompt layers, preview and labels.

Prompts live in napari layers (a Points layer for clicks, a Shapes layer for boxes), so nothing
the user drew is lost while an embedding is computed or an error is shown: the session is
(re)played from the layers whenever its slice is ready. The object being drawn may span several
slices of a volume; its masks per slice are the Session's `drafts` (the one place they are held),
shown in a preview layer and written to the Labels layer with one id on accept. No model math
here: every mask comes from the Session.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from ..core.errors import InputError, MedSAMError
from ..core.session import Session
from .geometry import bounds, image_array, rect
from .workers import wait_while

POSITIVE = np.array([0.2, 1.0, 0.2, 1.0])
NEGATIVE = np.array([1.0, 0.25, 0.25, 1.0])
PREVIEW_RGBA = (1.0, 0.85, 0.0, 1.0)
# a click mark's width on screen, in pixels, whatever the zoom: zoomed in on a nodule a few
# pixels wide, a mark sized in image pixels would cover the object and its preview
CLICK_MARK_PX = (6.0, 14.0)
ZOOMING = "Small object: zooming in (the mask sharpens in a moment)..."  # status bar meanwhile


class Annotation:
    """Binds an Image layer to a Session and four helper layers in `viewer`.

    Args:
        viewer: the napari viewer.
        image: the Image layer to annotate.
        notify: callback(level, text) showing a message to the user.
        request_embedding: callback() asking the widget to embed the current slice.
    """

    def __init__(self, viewer, image, notify: Callable[[str, str], None],
                 request_embedding: Callable[[], None]):
        self.viewer, self.image = viewer, image
        self.data, self.is_volume = image_array(image)
        self.shape = self.data.shape if self.is_volume else self.data.shape[:2]
        self.notify, self.request_embedding = notify, request_embedding
        self.session: Session | None = None
        self._gate_told: str | None = None  # image key whose adapter gate message was shown
        self.session_key: tuple | None = None
        self.preset = "auto"  # intensity preset name chosen for this image
        self.ready: set[int] = set()
        self._kept_drafts: dict[int, np.ndarray] = {}  # drafts of a detached session
        self.current_z = self.shape[0] // 2 if self.is_volume else 0
        self.negative_mode = False
        self.negative_click = False
        self.latencies_ms: list[float] = []
        self.busy = False  # a propagation runs on the session: prompts wait in their layers
        self._zooming: set[tuple] = set()  # (image key, window) being encoded in the background
        self.zoom_workers: list = []  # their workers, while they run
        self._syncing = False
        self._make_layers()

    # ---- layers ------------------------------------------------------------------------------
    def _transform(self) -> dict:
        im = self.image
        return {"scale": tuple(im.scale), "translate": tuple(im.translate),
                "rotate": im.rotate, "shear": im.shear, "affine": im.affine.affine_matrix}

    def _make_layers(self) -> None:
        from napari.utils.colormaps import DirectLabelColormap

        name, ndim, tf = self.image.name, len(self.shape), self._transform()
        meta = dict(self.image.metadata)
        self.labels = self._find_labels(f"{name} labels")
        if self.labels is None:
            self.labels = self.viewer.add_labels(np.zeros(self.shape, np.uint16),
                                                 name=f"{name} labels", opacity=0.5, **tf)
            self.labels.metadata.update(meta)
        self.preview = self.viewer.add_labels(
            np.zeros(self.shape, np.uint8), name=f"{name} preview", opacity=0.55, **tf,
            colormap=DirectLabelColormap(color_dict={1: PREVIEW_RGBA, None: (0, 0, 0, 0)}),
        )
        self._edge_width = max(1.0, max(self.shape[-2:]) / 200)
        self.boxes = self.viewer.add_shapes(
            ndim=ndim, name=f"{name} boxes", edge_color="cyan", face_color="transparent",
            edge_width=self._edge_width, **tf,
        )
        self.points = self.viewer.add_points(
            ndim=ndim, name=f"{name} clicks", size=max(self.shape[-2:]) / 60,
            canvas_size_limits=CLICK_MARK_PX, features={"positive": np.zeros(0, bool)},
            border_color="white", **tf,
        )
        self.points.current_face_color = POSITIVE
        self.points.mouse_drag_callbacks.insert(0, self._on_press)
        self.points.events.data.connect(self._on_points)
        self.boxes.events.data.connect(self._on_boxes)

    def _find_labels(self, name: str):
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            if layer._type_string == "labels" and tuple(layer.data.shape) == self.shape:
                return layer
        return None

    def helper_layers(self) -> list:
        return [self.points, self.boxes, self.preview, self.labels]

    def remove_layers(self) -> None:
        """Remove the prompt and preview layers (the labels layer stays)."""
        for layer in (self.points, self.boxes, self.preview):
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)

    # ---- session -----------------------------------------------------------------------------
    def attach(self, session: Session, key: tuple | None = None) -> None:
        """Adopt a session built off the UI thread for settings `key` (model, preset); it writes
        into the Labels layer's own array, and keeps the drafts of the session it replaces."""
        session.use_labels(self.labels.data)
        session.drafts.update(self._kept_drafts)
        session.defer_zoom = True  # a click never waits for a zoom window: see _zoom_later
        self._kept_drafts = {}
        if self.is_volume:
            session.set_slice(self.current_z)
        self.session, self.session_key, self.ready = session, key, set()

    def detach(self) -> None:
        """Forget the session (model or preset changed); prompts and drafts stay."""
        if self.session is not None:
            self._kept_drafts = dict(self.session.drafts)
        self.session, self.session_key, self.ready = None, None, set()

    def session_with_labels(self) -> Session:
        """The session, writing into the Labels layer's current array (napari replaces the
        array on some edits, e.g. undo of a paint stroke)."""
        if self.session is None:
            raise InputError("Draw the object on one slice first (or compute the embeddings).")
        if self.session.labels is not self.labels.data:
            self.session.use_labels(self.labels.data)
        return self.session

    def has_drafts(self) -> bool:
        """A mask of the object being drawn exists on some slice."""
        return bool(self.session.drafts if self.session is not None else self._kept_drafts)

    def is_ready(self, z: int | None = None) -> bool:
        """The slice's embedding is there and the session is free to decode on it."""
        z = self.current_z if z is None else z
        if self.session is None or self.busy:
            return False
        if z not in self.ready and self.session.is_embedded(z):
            self.ready.add(z)
        return z in self.ready

    def slice_ready(self, z: int) -> None:
        """The worker finished slice z: play pending prompts when it is the one on screen."""
        self.ready.add(z)
        if z == self.current_z and self.has_prompts():
            self.replay()

    # ---- prompts from the layers ---------------------------------------------------------------
    def _z(self, coords: np.ndarray) -> int:
        return int(round(float(coords[0]))) if self.is_volume else 0

    def _points_at(self, z: int) -> tuple[list[tuple[float, float]], list[bool]]:
        data = np.asarray(self.points.data)
        pos = np.asarray(self.points.features["positive"], bool) if len(data) else []
        keep = [i for i in range(len(data)) if self._z(data[i]) == z]
        xy = [(float(data[i][-1]), float(data[i][-2])) for i in keep]
        return xy, [bool(pos[i]) for i in keep]

    def _box_at(self, z: int) -> tuple[float, float, float, float] | None:
        for verts in reversed(self.boxes.data):
            verts = np.asarray(verts)
            if self._z(verts[0]) == z:
                return bounds(verts)
        return None

    def has_prompts(self, z: int | None = None) -> bool:
        z = self.current_z if z is None else z
        return bool(self._points_at(z)[0]) or self._box_at(z) is not None

    def _on_press(self, layer, event):
        """Right click or Ctrl+click adds a negative point (napari's add mode does the adding).
        The point is added with its sign and colour already (no second write to the layer)."""
        self.negative_click = event.button == 2 or "Control" in event.modifiers
        layer.selected_data = set()  # before the defaults: napari recolours selected points
        positive = self.negative_mode == self.negative_click
        layer.feature_defaults = {"positive": positive}
        layer.current_face_color = POSITIVE if positive else NEGATIVE

    def _on_points(self, event) -> None:
        if self._syncing or getattr(event, "action", None) not in ("added", "removed", "changed"):
            return
        if event.action != "added":
            self.replay()
            return
        if not self._view_ok():
            return
        positive = self.negative_mode == self.negative_click
        self.negative_click = False
        n = len(self.points.data)
        new = sorted({int(i) % n for i in event.data_indices})
        with self._sync():  # only where napari's defaults did not already set them (~2 ms)
            if not (self.points.features.loc[new, "positive"] == positive).all():
                feats = self.points.features.copy()
                feats.loc[new, "positive"] = positive
                self.points.features = feats
            colors = np.array(self.points.face_color, dtype=float)
            want = POSITIVE if positive else NEGATIVE
            if not np.allclose(colors[new], want):
                colors[new] = want
                self.points.face_color = colors
        for i in new:
            coords = np.asarray(self.points.data[i])
            self._go_to(self._z(coords))
            if self.is_ready():
                self._run(lambda c=coords, p=positive: self.session.add_point(c[-1], c[-2], p),
                          undo_layer=self.points)
            else:
                self.request_embedding()

    def _on_boxes(self, event) -> None:
        if self._syncing or getattr(event, "action", None) not in ("added", "removed", "changed"):
            return
        if event.action != "added" or not len(self.boxes.data):
            self.replay()
            return
        if not self._view_ok():
            return
        verts = np.asarray(self.boxes.data[-1])
        z = self._z(verts[0])
        self._go_to(z)
        others = [np.asarray(v) for v in self.boxes.data[:-1] if self._z(np.asarray(v)[0]) != z]
        box = bounds(verts)
        self._set_boxes([*others, rect(box, z if self.is_volume else None)])  # one per slice
        if self.is_ready():
            self._run(lambda: self.session.set_box(box), undo_layer=self.boxes)
        else:
            self.request_embedding()

    def _run(self, action: Callable[[], np.ndarray], undo_layer=None) -> None:
        """Decode one prompt and show the preview; a prompt the model cannot use is dropped
        from its layer with a plain message (earlier prompts and masks stay)."""
        start = time.perf_counter()
        try:
            action()
        except MedSAMError as exc:
            self.notify("warning", f"{exc} That prompt was removed; the others are kept.")
            with self._sync():
                if undo_layer is not None and len(undo_layer.data):
                    undo_layer.selected_data = {len(undo_layer.data) - 1}
                    undo_layer.remove_selected()
            return
        self.latencies_ms.append((time.perf_counter() - start) * 1000)
        if self.session.state.note:  # an empty mask on purpose (uniform image, negative clicks)
            self.notify("info", self.session.state.note)
        self._explain_gate()
        self._show(self.current_z)
        self._zoom_later()

    def _zoom_later(self) -> None:
        """The prompt's object is small and its zoom window is not encoded yet: the preview
        shows the whole-image mask now, the window is encoded in a worker, and the prompts are
        decoded again in it when that ends (a click never waits ~0.5 s for the encoder)."""
        if self.session is None or self.session.state.pending is None:
            return
        from napari.qt.threading import create_worker

        predictor = self.session.predictor
        wanted = (predictor.key, self.session.state.pending)
        if wanted in self._zooming:
            return  # already being encoded: its end refines whatever prompt waits for it
        worker = create_worker(predictor.window_job(wanted[1]), _start_thread=False,
                               _ignore_errors=True)
        self._zooming.add(wanted)
        self.zoom_workers.append(worker)

        def ended(*_):
            self._zooming.discard(wanted)
            if worker in self.zoom_workers:
                self.zoom_workers.remove(worker)
            if not self.zoom_workers and self.viewer.status == ZOOMING:
                self.viewer.status = "Ready"  # failed or overtaken: the message is no longer true

        def encoded(_):
            ended()
            if self.session is None or predictor is not self.session.predictor \
                    or (predictor.key, self.session.state.pending) != wanted \
                    or not self.is_ready():
                return  # the user moved on (another slice, image, model) or a job runs
            try:
                self.session.refine()
            except MedSAMError as exc:
                self.notify("warning", f"Zooming in on the small object failed: {exc} "
                                       "The whole-image mask is kept.")
                return
            self._show(self.current_z)
            self.viewer.status = "Zoomed in on the small object."
            self._zoom_later()  # the zoomed mask may ask for a larger or tighter window

        def failed(exc):
            ended()
            self.notify("warning", f"Zooming in on the small object failed ({exc}). The "
                                   "whole-image mask is kept.")

        worker.returned.connect(encoded)
        worker.errored.connect(failed)
        worker.start()
        self.viewer.status = ZOOMING

    def wait_zoom(self, timeout_s: float = 60.0) -> None:
        """Block (processing Qt events) until no zoom window is being encoded; for tests."""
        wait_while(lambda: bool(self.zoom_workers), timeout_s, "Zooming in")

    def _explain_gate(self) -> None:
        """Say once per image when the selected adapter is left out (its domain gate)."""
        gate = getattr(self.session.predictor.backend, "last_gate", None)
        key = self.session.predictor.key
        if gate is None or gate[1] or key == self._gate_told:
            return
        self._gate_told = key
        self.notify("info", "The selected adapter was trained on images unlike this one, so this "
                            "image is segmented without it (as with the default adapter). "
                            "Fine-tune on this kind of image to get an adapter for it.")

    def replay(self) -> None:
        """Rebuild the session's prompts of the current slice from the layers (after an edit,
        a removal, or when its embedding arrives)."""
        z = self.current_z
        if not self.is_ready(z):
            if self.has_prompts(z):
                self.request_embedding()
            else:
                self._kept_drafts.pop(z, None)
                self._show(z)
            return
        s = self.session
        s.reset_prompts()
        start = time.perf_counter()
        try:
            box = self._box_at(z)
            if box is not None:
                s.set_box(box)
            for (x, y), positive in zip(*self._points_at(z), strict=True):
                s.add_point(x, y, positive)
        except MedSAMError as exc:
            self.notify("warning", f"{exc} Fix or remove that prompt.")
        self.latencies_ms.append((time.perf_counter() - start) * 1000)
        if self.session.state.note:  # an empty mask on purpose (uniform image, negative clicks)
            self.notify("info", self.session.state.note)
        self._explain_gate()
        self._show(z)
        self._zoom_later()

    # ---- slices ------------------------------------------------------------------------------
    def viewer_slice(self) -> int:
        """The slice of the image shown in the viewer (0 for a 2D image)."""
        if not self.is_volume:
            return 0
        world = np.asarray(self.viewer.dims.point)[-self.image.ndim:]
        z = int(round(float(self.image.world_to_data(world)[0])))
        return min(max(z, 0), self.shape[0] - 1)

    def check_view(self) -> None:
        """Raise a plain-words InputError when the view cannot take prompts."""
        if self.viewer.dims.ndisplay != 2:
            raise InputError("Switch the viewer to 2D (the 2D/3D button) to draw prompts.")
        if self.is_volume:
            order = list(self.viewer.dims.order)
            if sorted(order[-2:]) != sorted(range(len(order))[-2:]):
                raise InputError("Show the volume slice by slice in its own orientation: reset "
                                 "the axis order (View > Axes) before drawing prompts.")

    def _view_ok(self) -> bool:
        try:
            self.check_view()
        except InputError as exc:
            self.notify("warning", f"{exc} Your prompt is kept and used once the view is 2D.")
            return False
        return True

    def _go_to(self, z: int) -> None:
        if self.is_volume and z != self.current_z:
            self.current_z = z
            if self.session is not None and not self.busy:
                self.session.set_slice(z)

    def resume(self) -> None:
        """A propagation ended: back to the slice on screen, playing prompts drawn meanwhile."""
        if self.session is not None and self.is_volume:
            self.session.set_slice(self.current_z)
        if self.has_prompts():
            self.replay()

    def on_slice_changed(self) -> None:
        """The viewer moved to another slice: that slice's prompts (if any) take over."""
        z = self.viewer_slice()
        if z != self.current_z:
            self._go_to(z)
            if self.has_prompts(z):
                self.replay()

    # ---- edits -------------------------------------------------------------------------------
    def _show(self, z: int) -> None:
        """Show slice z's draft (the Session's, or one kept from a detached session)."""
        drafts = self.session.drafts if self.session is not None else self._kept_drafts
        mask = drafts.get(z)
        target = self.preview.data[z] if self.is_volume else self.preview.data
        target[...] = 0 if mask is None else np.asarray(mask, np.uint8)
        self.preview.refresh()

    def undo(self) -> bool:
        """Drop the last prompt of the current slice. Returns False when there was none."""
        z = self.current_z
        if not self.has_prompts(z):
            return False
        if self.is_ready(z) and (self.session.state.points or self.session.state.box):
            state = self.session.state
            self.session.undo()
            prev = self.session.state
            if len(state.points) > len(prev.points):
                self._remove_last_point(z)
            else:
                self._replace_box(z, prev.box)
            self._show(z)
            self._zoom_later()
            return True
        pts, _ = self._points_at(z)
        if pts:
            self._remove_last_point(z)
        else:
            self._replace_box(z, None)
        self.replay()
        return True

    def _remove_last_point(self, z: int) -> None:
        idx = [i for i in range(len(self.points.data)) if self._z(self.points.data[i]) == z]
        with self._sync():
            self.points.selected_data = {idx[-1]}
            self.points.remove_selected()

    def _replace_box(self, z: int, box) -> None:
        keep = [np.asarray(v) for v in self.boxes.data if self._z(np.asarray(v)[0]) != z]
        if box is not None:
            keep.append(rect(box, z if self.is_volume else None))
        self._set_boxes(keep)

    def _set_boxes(self, rects: list[np.ndarray]) -> None:
        with self._sync():
            self.boxes.data = []
            if rects:
                self.boxes.add_rectangles(rects, edge_width=self._edge_width, edge_color="cyan",
                                          face_color="transparent")

    def clear(self) -> None:
        """Discard the object being drawn: its prompts on every slice and its draft masks."""
        with self._sync():
            self.points.data = np.zeros((0, len(self.shape)))
            self.boxes.data = []
        if self.session is not None:
            self.session.clear_object()
        self._kept_drafts = {}
        self.preview.data[...] = 0
        self.preview.refresh()

    def commit(self, label: int | None = None) -> int:
        """Write the object being drawn (its drafts on every slice) into the Labels layer with
        one id (the next free one unless `label` is given), over background only."""
        if self.session is None or not self.session.drafts:
            raise InputError("Nothing to accept yet: draw a box or click on the object first.")
        label = self.session_with_labels().commit_object(label or None)
        self.clear()
        self.labels.refresh()
        self.labels.selected_label = label
        return label

    def _sync(self):
        return _Guard(self)


class _Guard:
    """Ignore layer events caused by our own edits."""

    def __init__(self, owner: Annotation):
        self.owner = owner

    def __enter__(self):
        self.prev, self.owner._syncing = self.owner._syncing, True

    def __exit__(self, *exc):
        self.owner._syncing = self.prev
