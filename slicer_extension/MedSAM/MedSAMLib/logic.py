"""MedSAMLogic: Slicer volumes and segments in, the napari-medsam core Session underneath.

GUI-free (no qt, ctk or ScriptedLoadableModule), so it runs inside Slicer, in batch scripts and
headless on PyPI's `slicer-core`. Volumes come in as `arrayFromVolume` (K, J, I) arrays plus
their IJK-to-RAS; masks go back into segments through `updateSegmentBinaryLabelmapFromArray` (whole
volumes) or a one-slice labelmap (the Segment Editor's way). Method names follow Slicer's
camelCase convention; everything heavy also has a background-job form (see jobs.py). Accepted
objects are saved as corrections and adapters fine-tuned on them (logic_corrections.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from . import editing, features, nodes
from . import geometry as geo
from .jobs import BackgroundJob
from .logic_background import BackgroundWork, BusyError, Entry
from .logic_corrections import CorrectionsWork

ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], bool]


MAX_SESSIONS = 4  # volumes x axes kept ready; older ones are rebuilt (from the cache) on use


class MedSAMLogic(BackgroundWork, CorrectionsWork):
    """Interactive and batch segmentation of Slicer volumes with LiteMedSAM.

    Args:
        predictor: a core `Predictor` to share (default: built on first use, see `getPredictor`).
        preset: intensity preset name (auto, mri, ct-soft-tissue, ...).
        device: "cpu" or "cuda" (default: cuda when torch sees a GPU).
        profile: execution profile of the core's backends (accurate, balanced, fast, auto) when
            the installed core has them; None for the default torch predictor.
    """

    def __init__(self, predictor=None, preset: str = "auto", device: str | None = None,
                 profile: str | None = None):
        self._predictor = predictor
        self.preset = preset
        self.device = device
        self.profile = profile
        self.zoom = True  # small objects decoded on a re-encoded window (core.zoom)
        self._entries: dict[tuple[str, int], Entry] = {}
        self.busyJob: BackgroundJob | None = None
        self.adapterPath: str | None = None
        self._editor: editing.SliceEditor | None = None
        self._runtime = None  # the core's Runtime: the model stays loaded across settings
        self._cache = None
        if predictor is not None and predictor.backend.name == "torch":  # reuse its model
            runtime = features.runtime()
            model = predictor.backend.model
            self._runtime, self._cache = runtime.Runtime(), predictor.cache
            self.device = self.device or str(model.device)
            self._runtime.adopt(model, runtime.RuntimeSpec(device=self.device))

    # ---- model -------------------------------------------------------------------------------
    def getPredictor(self):
        """The predictor, built on first use (loading the model takes a few seconds) through the
        core's runtime builder, over the per-user disk cache of embeddings."""
        if self._predictor is None:
            self._predictor = self._runtime_now().predictor(self._spec(), self._cache)
        return self._predictor

    def _runtime_now(self):
        """The core's Runtime (made once, with the per-user disk cache of embeddings)."""
        if self._runtime is None:
            runtime = features.runtime()
            self._runtime, self._cache = runtime.Runtime(), runtime.default_cache()
        return self._runtime

    def _spec(self):
        """The runtime spec of the current profile, device, adapter and zoom setting."""
        return features.runtime().RuntimeSpec(profile=self.profile or "torch", device=self.device,
                                              adapter=self.adapterPath, zoom=self.zoom)

    def warmInBackground(self) -> threading.Thread | None:
        """Load (ONNX profiles: open and run once) the model of the current settings in a
        thread, so the first embedding does not wait for it; the module panel starts it when it
        opens. None when the predictor is already built or the core cannot warm up."""
        if self._predictor is not None:
            return None
        runtime = self._runtime_now()
        if not hasattr(runtime, "warm_in_background"):  # an older napari-medsam
            return None
        return runtime.warm_in_background(self._spec())

    def setZoom(self, on: bool) -> None:
        """Decode small objects on a zoomed, re-encoded window (default) or on the whole slice;
        the predictor is rebuilt on next use (the model stays loaded)."""
        if bool(on) != self.zoom:
            self.zoom, self._predictor = bool(on), None

    def setProfile(self, profile: str | None) -> None:
        """Switch execution profile (torch, or accurate / balanced / fast / auto on ONNX
        Runtime); the model is rebuilt on next use, embeddings of another backend re-computed."""
        profile = None if profile in (None, "", "torch") else profile
        if profile != self.profile:
            self.profile, self._predictor = profile, None
            self._entries.clear()

    def setPreset(self, preset: str) -> None:
        """Change the intensity preset; sessions are rebuilt (embeddings stay cached per preset)."""
        from napari_medsam.core.intensity import get_preset

        get_preset(preset)  # raises a clear InputError for unknown names
        if preset != self.preset:
            self.preset = preset
            self._entries.clear()

    def loadAdapter(self, path: str | None) -> str:
        """Use a LoRA adapter (folder or registry name); None for the default (LiteMedSAM with
        its shipped click adapter), "none" for the base model alone.

        On torch it is switched in place on the loaded model; an ONNX Runtime profile gets the
        adapter merged (exported once). Returns a sentence for the status line.
        """
        self.adapterPath = path or None
        self._entries.clear()
        self._predictor = None
        self.getPredictor()
        if not path:
            return "Using the default model (LiteMedSAM with its click adapter)."
        if path.strip().lower() == "none":
            return "Using the base model (no adapter)."
        return f"Using adapter '{path}'."

    # ---- sessions ------------------------------------------------------------------------------
    def session(self, volumeNode, axis: int = 0):
        """The core Session of this volume cut across array `axis` (0 = K slices), its slices
        in the canonical display frame of their plane (`frame`): the same pixels the CLI and
        napari give the model.

        Rebuilt when the volume's voxels change; embeddings are cached by content, so a rebuild
        of the same voxels re-encodes nothing.
        """
        return self._entry(volumeNode, axis).session

    def frame(self, volumeNode, axis: int = 0) -> geo.SliceFrame:
        """How the array slices across `axis` map to the session's slices."""
        return self._entry(volumeNode, axis).frame

    def _entry(self, volumeNode, axis: int) -> Entry:
        from napari_medsam.core.session import Session

        geo.in_plane_axes(axis)
        image = volumeNode.GetImageData() if volumeNode is not None else None
        if image is None:
            raise nodes.NodeError("Select a volume that holds an image first.")
        key = (volumeNode.GetID(), axis)
        mtime = int(image.GetMTime())
        entry = self._entries.get(key)
        if entry is None or entry.mtime != mtime:
            array = nodes.volume_array(volumeNode)
            frame = geo.SliceFrame.of(nodes.ijk_to_ras_matrix(volumeNode), axis, array.shape)
            session = Session(self.getPredictor(), preset=self.preset)
            session.set_image(frame.stack(array), is_volume=True)
            entry = Entry(session, mtime, frame)
            self._entries.pop(key, None)
            self._entries[key] = entry
            while len(self._entries) > MAX_SESSIONS:  # each holds a copy of its volume
                self._entries.pop(next(iter(self._entries)))
        return entry

    def sliceShape(self, volumeNode, axis: int = 0) -> tuple[int, int]:
        """(rows, columns) of an array slice across `axis`."""
        rows, cols = geo.in_plane_axes(axis)
        shape = self.shape(volumeNode)
        return shape[rows], shape[cols]

    def shape(self, volumeNode) -> tuple[int, int, int]:
        """(K, J, I) size of the volume."""
        return tuple(volumeNode.GetImageData().GetDimensions())[::-1]

    def _ready(self, volumeNode, axis: int, index: int, deferZoom: bool = False) -> Entry:
        if self.busyJob is not None and self.busyJob.running:
            raise BusyError(f"{self.busyJob.name} is running: wait for it or cancel it first.")
        entry = self._entry(volumeNode, axis)
        if not 0 <= int(index) < entry.frame.shape_kji[axis]:
            raise nodes.NodeError(f"Slice {index} is outside the volume (0 to "
                                  f"{entry.frame.shape_kji[axis] - 1}).")
        entry.session.set_slice(entry.frame.core_index(index))
        if hasattr(entry.session, "defer_zoom"):  # an older core has no deferred zoom
            entry.session.defer_zoom = deferZoom
        return entry

    # ---- prompts in slice pixels -----------------------------------------------------------
    def setBox(self, volumeNode, box, index: int, axis: int = 0,
               deferZoom: bool = False) -> np.ndarray:
        """Box x0, y0, x1, y1 (array slice columns/rows) on slice `index`; returns the preview
        mask on that array slice. `deferZoom`: see `startZoom`."""
        entry = self._ready(volumeNode, axis, index, deferZoom)
        return entry.frame.mask_to_array(entry.session.set_box(entry.frame.box_to_core(box)))

    def addPoint(self, volumeNode, x: float, y: float, index: int, positive: bool = True,
                 axis: int = 0, deferZoom: bool = False) -> np.ndarray:
        """A click on slice `index` (array slice column x, row y); returns the preview mask.
        `deferZoom`: see `startZoom`."""
        entry = self._ready(volumeNode, axis, index, deferZoom)
        (cx, cy), = entry.frame.points_to_core([[x, y]])
        return entry.frame.mask_to_array(entry.session.add_point(cx, cy, positive))

    def startZoom(self, volumeNode, axis: int = 0) -> BackgroundJob | None:
        """With `deferZoom` (the editor effect's prompts), a prompt on a small object returns the
        whole-slice mask at once and leaves its zoom window unencoded: this encodes it in a
        thread (None when nothing waits). The job's result, on the polling thread, is (array
        slice index, refined preview), or None when the prompts changed meanwhile; call again
        after it: the zoomed mask may ask for a larger or tighter window."""
        entry = self._entry(volumeNode, axis)
        session = entry.session
        state = session.state
        window = getattr(state, "pending", None)
        if window is None:
            return None
        encode = session.predictor.window_job(window)

        def finish(_):
            if session.state is not state or (self.busyJob is not None and self.busyJob.running):
                return None  # another prompt came (it zooms itself), or a job uses the model
            session.refine()
            return self.preview(volumeNode, axis)

        return BackgroundJob(lambda progress, cancelled: encode(), finish, name="Zoom")

    def undoPrompt(self, volumeNode, axis: int = 0) -> np.ndarray | None:
        entry = self._entry(volumeNode, axis)
        return entry.frame.mask_to_array(entry.session.undo())

    def resetPrompts(self, volumeNode, axis: int = 0) -> None:
        self.session(volumeNode, axis).reset_prompts()

    def preview(self, volumeNode, axis: int = 0) -> tuple[int, np.ndarray | None]:
        """(array slice index, preview mask on that slice or None) of the object being drawn."""
        entry = self._entry(volumeNode, axis)
        session = entry.session
        return (entry.frame.core_index(session.current_slice),
                entry.frame.mask_to_array(session.preview))

    # ---- prompts in RAS (what slice views give) --------------------------------------------
    def axisForSliceNormal(self, volumeNode, normalRAS) -> int:
        """Array axis cut by a slice view whose plane normal is `normalRAS` (world)."""
        return geo.axis_for_normal(normalRAS, nodes.ijk_to_world_matrix(volumeNode))

    def promptFromRAS(self, volumeNode, pointsRAS, axis: int) -> geo.SlicePrompt:
        """World RAS points on one slice -> slice index and (x, y) slice pixels.

        Rounded to 1/1000 of a voxel: the matrix round trip leaves ~1e-12 of noise, which must
        not move a prompt across a pixel boundary (a zoom window is placed on whole pixels).
        """
        ijk = geo.ras_to_ijk(pointsRAS, nodes.ijk_to_world_matrix(volumeNode))
        return geo.ijk_to_slice(np.round(np.asarray(ijk, float), 3), axis, self.shape(volumeNode))

    def setBoxRAS(self, volumeNode, corner1RAS, corner2RAS, axis: int,
                  deferZoom: bool = False):
        """A box dragged between two RAS corners; returns (SlicePrompt, preview mask)."""
        prompt = self.promptFromRAS(volumeNode, [corner1RAS, corner2RAS], axis)
        box = geo.box_from_points(prompt.points)
        return prompt, self.setBox(volumeNode, box, prompt.index, axis, deferZoom)

    def addPointRAS(self, volumeNode, pointRAS, positive: bool, axis: int,
                    deferZoom: bool = False):
        """A click at a RAS point; returns (SlicePrompt, preview mask)."""
        prompt = self.promptFromRAS(volumeNode, [pointRAS], axis)
        x, y = prompt.points[0]
        return prompt, self.addPoint(volumeNode, x, y, prompt.index, positive, axis, deferZoom)

    # ---- writing into segments ---------------------------------------------------------------
    def sliceLabelmap(self, volumeNode, mask2d, axis: int, index: int, segmentationNode=None):
        """(labelmap, extent) for `modifySelectedSegmentByLabelmap` (see nodes.slice_labelmap)."""
        return nodes.slice_labelmap(volumeNode, mask2d, axis, index, segmentationNode)

    def applyPreview(self, segmentationNode, segmentId: str, volumeNode, axis: int = 0,
                     mode: str = "replace") -> int:
        """Write the preview into its slice of the segment (replace, add or remove).

        The object is then accepted: saved as a correction (replace, add; see
        `acceptObject`) and its prompts cleared. Returns the number of voxels in the preview.
        """
        index, mask = self.preview(volumeNode, axis)
        if mask is None or not mask.any():
            raise nodes.NodeError("Nothing to apply: draw a box or click on the object first.")
        self.writeSlice(segmentationNode, segmentId, volumeNode, mask, axis, index, mode)
        if mode == "remove":  # an eraser, not an object
            self.resetPrompts(volumeNode, axis)
        else:
            self.acceptObject(volumeNode, axis, segmentationNode, segmentId)
        return int(mask.sum())

    def editor(self, scene) -> editing.SliceEditor:
        """The undoable slice editor of this scene (Slicer's segment editor logic)."""
        if self._editor is None or self._editor.scene is not scene:
            from .headless import app_logic

            self._editor = editing.SliceEditor(scene, app_logic())
        return self._editor

    def writeSlice(self, segmentationNode, segmentId: str, volumeNode, mask2d, axis: int,
                   index: int, mode: str = "replace") -> None:
        """Replace, add or remove a 2D mask on one slice of a segment; other slices are kept.

        One undo step (`undoEdit`), with the Segment Editor's overwrite rules.
        """
        self.editor(segmentationNode.GetScene()).apply(
            volumeNode, segmentationNode, segmentId, mask2d, axis, index, mode
        )

    def undoEdit(self) -> bool:
        """Undo the last slice edit made through this Logic."""
        return self._editor is not None and self._editor.undo()

    def segmentStack(self, segmentationNode, segmentId: str, volumeNode, axis: int = 0):
        """The segment as a (slices, rows, columns) stack along `axis` (uint8)."""
        return geo.stack_for_axis(
            nodes.segment_array(segmentationNode, segmentId, volumeNode), axis
        )

    def addToSegment(self, segmentationNode, segmentId: str, volumeNode, stack, axis: int = 0):
        """Union a (slices, rows, columns) mask stack along array `axis` into the segment;
        nothing is removed."""
        self._union(segmentationNode, segmentId, volumeNode,
                    geo.stack_to_kji(np.asarray(stack) > 0, axis))

    def _union(self, segmentationNode, segmentId: str, volumeNode, kji: np.ndarray) -> None:
        current = nodes.segment_array(segmentationNode, segmentId, volumeNode)
        merged = (current > 0) | (np.asarray(kji) > 0)
        nodes.write_segment(segmentationNode, segmentId, volumeNode, merged.astype(np.uint8))

    def segmentBox(self, volumeNode, segmentationNode, segmentId: str, box, index: int,
                   axis: int = 0, mode: str = "replace") -> np.ndarray:
        """One call for batch use: box on slice `index` -> mask written into the segment."""
        mask = self.setBox(volumeNode, box, index, axis)
        self.applyPreview(segmentationNode, segmentId, volumeNode, axis, mode)
        return mask

    # ---- echo 2D+t from a sequence ----------------------------------------------------------
    def volumeFromSequence(self, sequenceNode, name: str | None = None):
        """Stack a sequence of 2D frames into a volume node (frame t = slice K = t).

        Segment it like any volume (propagate with mode "time"), then `exportToSequence`.
        """
        frames, frame_matrix, _ = nodes.sequence_frames(sequenceNode)
        scene = sequenceNode.GetScene()
        name = name or f"{sequenceNode.GetName()} frames"
        return nodes.add_volume(scene, frames, nodes.stacked_geometry(frame_matrix), name)

    def exportToSequence(self, segmentationNode, segmentId: str, stackedVolume, sequenceNode,
                         name: str | None = None):
        """A segmentation sequence matching `sequenceNode`, from the stacked volume's segment."""
        masks = nodes.segment_array(segmentationNode, segmentId, stackedVolume)
        segment = segmentationNode.GetSegmentation().GetSegment(segmentId)
        return nodes.add_segmentation_sequence(
            sequenceNode.GetScene(), masks, sequenceNode,
            name or f"{sequenceNode.GetName()} segmentation", segment.GetName(),
        )

    # ---- batch helpers ------------------------------------------------------------------------
    def loadVolume(self, path: str, scene=None, name: str | None = None):
        """Load a NIfTI/DICOM/PNG file into a scalar volume node with its geometry.

        Inside Slicer prefer `slicer.util.loadVolume` (it needs the application); this path reads
        the file with napari-medsam's reader, whose affine is RAS like Slicer's IJKToRAS.
        """
        from napari_medsam.core.io import read_image

        data = read_image(path)
        array = data.data if data.is_volume else np.asarray(data.data)[None]
        if array.ndim == 4:
            array = nodes.to_gray(array)
        scene = scene if scene is not None else _scene()
        base = name or path.replace("\\", "/").rsplit("/", 1)[-1].split(".")[0]
        return nodes.add_volume(scene, array, geo.matrix_from_affine(data.affine), base)


_SHARED: MedSAMLogic | None = None


def shared_logic(factory: Callable[[], MedSAMLogic] | None = None) -> MedSAMLogic:
    """The one Logic of the Slicer session, shared by the module panel and the effect (one
    model in memory, one embedding cache). `factory` builds it on first use (the module passes
    its subclass with a parameter node)."""
    global _SHARED
    if _SHARED is None:
        _SHARED = (factory or MedSAMLogic)()
        _SHARED.setProfile(features_default_profile())
    return _SHARED


def features_default_profile() -> str | None:
    from .features import default_profile

    return default_profile()


def _scene():
    import slicer

    return slicer.mrmlScene
