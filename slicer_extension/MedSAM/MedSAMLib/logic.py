"""MedSAMLogic: Slicer volumes and segments in, the napari-medsam core Session underneath.

GUI-free (no qt, ctk or ScriptedLoadableModule), so it runs inside Slicer, in batch scripts and
headless on PyPI's `slicer-core`. Volumes come in as `arrayFromVolume` (K, J, I) arrays plus
their IJK-to-RAS; masks go back into segments through `updateSegmentBinaryLabelmapFromArray` (whole
volumes) or a one-slice labelmap (the Segment Editor's way). Method names follow Slicer's
camelCase convention; everything heavy also has a background-job form (see jobs.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from . import editing, nodes, tasks
from . import geometry as geo
from .jobs import BackgroundJob

ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], bool]


MAX_SESSIONS = 4  # volumes x axes kept ready; older ones are rebuilt (from the cache) on use


class BusyError(RuntimeError):
    """A propagation or automatic run is using the model; prompts wait for it."""


@dataclass
class _Entry:
    session: object
    mtime: int
    shape_kji: tuple[int, int, int]


class MedSAMLogic:
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
        self._entries: dict[tuple[str, int], _Entry] = {}
        self.busyJob: BackgroundJob | None = None
        self.adapterPath: str | None = None
        self._editor: editing.SliceEditor | None = None

    # ---- model -------------------------------------------------------------------------------
    def getPredictor(self):
        """The predictor, built on first use (loading the model takes a few seconds)."""
        if self._predictor is None:
            self._predictor = tasks.make_predictor(self.device, self.profile, self.adapterPath)
        return self._predictor

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
        """Use a LoRA adapter (folder or registry name), or None for the base model.

        On torch it is switched in place; an ONNX Runtime profile is rebuilt with the adapter
        merged (exported once). Returns a sentence for the status line.
        """
        self.adapterPath = path or None
        self._entries.clear()
        if self.profile is None:
            return tasks.load_adapter(self.getPredictor(), self.adapterPath)
        self._predictor = None
        self.getPredictor()
        return f"Using adapter '{path}'." if path else "Using the base model."

    # ---- sessions ------------------------------------------------------------------------------
    def session(self, volumeNode, axis: int = 0):
        """The core Session of this volume cut along array `axis` (0 = K slices).

        Rebuilt when the volume's voxels change; embeddings are cached by content, so a rebuild
        of the same voxels re-encodes nothing.
        """
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
            session = Session(self.getPredictor(), preset=self.preset)
            session.set_image(np.ascontiguousarray(geo.stack_for_axis(array, axis)), is_volume=True)
            entry = _Entry(session, mtime, tuple(array.shape))
            self._entries.pop(key, None)
            self._entries[key] = entry
            while len(self._entries) > MAX_SESSIONS:  # each holds a copy of its volume
                self._entries.pop(next(iter(self._entries)))
        return entry.session

    def shape(self, volumeNode) -> tuple[int, int, int]:
        """(K, J, I) size of the volume."""
        return tuple(volumeNode.GetImageData().GetDimensions())[::-1]

    def _ready(self, volumeNode, axis: int, index: int):
        if self.busyJob is not None and self.busyJob.running:
            raise BusyError(f"{self.busyJob.name} is running: wait for it or cancel it first.")
        session = self.session(volumeNode, axis)
        session.set_slice(int(index))
        return session

    # ---- prompts in slice pixels -----------------------------------------------------------
    def setBox(self, volumeNode, box, index: int, axis: int = 0) -> np.ndarray:
        """Box x0, y0, x1, y1 (slice columns/rows) on slice `index`; returns the preview mask."""
        return self._ready(volumeNode, axis, index).set_box(box)

    def addPoint(self, volumeNode, x: float, y: float, index: int, positive: bool = True,
                 axis: int = 0) -> np.ndarray:
        """A click on slice `index`; returns the preview mask."""
        return self._ready(volumeNode, axis, index).add_point(x, y, positive)

    def undoPrompt(self, volumeNode, axis: int = 0) -> np.ndarray | None:
        return self.session(volumeNode, axis).undo()

    def resetPrompts(self, volumeNode, axis: int = 0) -> None:
        self.session(volumeNode, axis).reset_prompts()

    def preview(self, volumeNode, axis: int = 0) -> tuple[int, np.ndarray | None]:
        """(slice index, preview mask or None) of the object being drawn."""
        session = self.session(volumeNode, axis)
        return session.current_slice, session.preview

    # ---- prompts in RAS (what slice views give) --------------------------------------------
    def axisForSliceNormal(self, volumeNode, normalRAS) -> int:
        """Array axis cut by a slice view whose plane normal is `normalRAS` (world)."""
        return geo.axis_for_normal(normalRAS, nodes.ijk_to_world_matrix(volumeNode))

    def promptFromRAS(self, volumeNode, pointsRAS, axis: int) -> geo.SlicePrompt:
        """World RAS points on one slice -> slice index and (x, y) slice pixels."""
        ijk = geo.ras_to_ijk(pointsRAS, nodes.ijk_to_world_matrix(volumeNode))
        return geo.ijk_to_slice(ijk, axis, self.shape(volumeNode))

    def setBoxRAS(self, volumeNode, corner1RAS, corner2RAS, axis: int):
        """A box dragged between two RAS corners; returns (SlicePrompt, preview mask)."""
        prompt = self.promptFromRAS(volumeNode, [corner1RAS, corner2RAS], axis)
        box = geo.box_from_points(prompt.points)
        return prompt, self.setBox(volumeNode, box, prompt.index, axis)

    def addPointRAS(self, volumeNode, pointRAS, positive: bool, axis: int):
        """A click at a RAS point; returns (SlicePrompt, preview mask)."""
        prompt = self.promptFromRAS(volumeNode, [pointRAS], axis)
        x, y = prompt.points[0]
        return prompt, self.addPoint(volumeNode, x, y, prompt.index, positive, axis)

    # ---- writing into segments ---------------------------------------------------------------
    def sliceLabelmap(self, volumeNode, mask2d, axis: int, index: int, segmentationNode=None):
        """(labelmap, extent) for `modifySelectedSegmentByLabelmap` (see nodes.slice_labelmap)."""
        return nodes.slice_labelmap(volumeNode, mask2d, axis, index, segmentationNode)

    def applyPreview(self, segmentationNode, segmentId: str, volumeNode, axis: int = 0,
                     mode: str = "replace") -> int:
        """Write the preview into its slice of the segment (replace, add or remove).

        Returns the number of voxels in the preview; the prompts are then cleared.
        """
        index, mask = self.preview(volumeNode, axis)
        if mask is None or not mask.any():
            raise nodes.NodeError("Nothing to apply: draw a box or click on the object first.")
        self.writeSlice(segmentationNode, segmentId, volumeNode, mask, axis, index, mode)
        self.resetPrompts(volumeNode, axis)
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
        """Union a (slices, rows, columns) mask stack into the segment; nothing is removed."""
        current = nodes.segment_array(segmentationNode, segmentId, volumeNode)
        merged = current | geo.stack_to_kji(np.asarray(stack) > 0, axis)
        nodes.write_segment(segmentationNode, segmentId, volumeNode, merged.astype(np.uint8))

    def segmentBox(self, volumeNode, segmentationNode, segmentId: str, box, index: int,
                   axis: int = 0, mode: str = "replace") -> np.ndarray:
        """One call for batch use: box on slice `index` -> mask written into the segment."""
        mask = self.setBox(volumeNode, box, index, axis)
        self.applyPreview(segmentationNode, segmentId, volumeNode, axis, mode)
        return mask

    # ---- embedding the volume ahead of the clicks ------------------------------------------
    def iterEmbedding(self, volumeNode, axis: int = 0, start: int | None = None,
                      slices=None) -> Iterator[tuple[int, int]]:
        """Encode slices (start first, then outward) into the cache; yields (done, total).

        Only the cache is written, so clicks on other slices may go on meanwhile.
        """
        session = self.session(volumeNode, axis)
        order = list(slices) if slices is not None else session.slice_order(start)
        yield from tasks.embed_slices(session, order)

    def startEmbedding(self, volumeNode, axis: int = 0, start: int | None = None) -> BackgroundJob:
        """Encode the whole volume in a background thread (progress, cancel)."""
        session = self.session(volumeNode, axis)
        order = session.slice_order(start)

        def work(progress: ProgressFn, cancelled: CancelFn) -> int:
            done = 0
            for done, total in tasks.embed_slices(session, order):
                progress(done, total)
                if cancelled():
                    break
            return done

        return BackgroundJob(work, name="Embedding")

    # ---- propagation through slices / frames -------------------------------------------------
    def startPropagation(self, volumeNode, segmentationNode, segmentId: str, index: int,
                         axis: int = 0, mode: str = "volume",
                         direction: str = "both") -> BackgroundJob:
        """Propagate the segment's mask on slice `index` to its neighbours, in the background.

        Slices where the segment already has voxels are kept as they are (and guide the next
        slices). When the job ends, the new slices are added to the segment on the polling
        thread; a cancelled run keeps the slices it finished.
        """
        session = self._ready(volumeNode, axis, index)
        stack = self.segmentStack(segmentationNode, segmentId, volumeNode, axis).copy()
        if not stack[index].any():
            _, preview = self.preview(volumeNode, axis)
            if preview is None or not preview.any():
                raise nodes.NodeError(
                    f"The segment is empty on slice {index}: segment it there first."
                )
            stack[index] = preview

        def work(progress: ProgressFn, cancelled: CancelFn):
            return tasks.propagate(session, stack, index, mode, direction, progress, cancelled)

        def finish(outcome: tasks.PropagationOutcome):
            self.addToSegment(segmentationNode, segmentId, volumeNode, outcome.stack, axis)
            return outcome

        self.busyJob = BackgroundJob(work, finish, name="Propagation")
        return self.busyJob

    def propagate(self, volumeNode, segmentationNode, segmentId: str, index: int,
                  axis: int = 0, mode: str = "volume", direction: str = "both"):
        """Blocking form of `startPropagation`; returns the outcome (slices, scores, stops)."""
        return self.startPropagation(volumeNode, segmentationNode, segmentId, index, axis, mode,
                                     direction).wait()

    # ---- automatic heads --------------------------------------------------------------------
    def startAuto(self, volumeNode, segmentationNode, head: str, slices=None,
                  axis: int = 0) -> BackgroundJob:
        """Run an automatic head on slices (default: all) in the background; one segment per
        structure of the head, added to (never replacing) what is there."""
        session = self.session(volumeNode, axis)
        loaded = tasks.load_head(head, self.getPredictor())
        order = list(slices) if slices is not None else list(range(session.n_slices))

        def work(progress: ProgressFn, cancelled: CancelFn):
            return tasks.auto_segment(session, loaded, order, progress, cancelled)

        def finish(outcome: tasks.AutoOutcome) -> dict[str, str]:
            ids = {}
            for value, name in zip(outcome.values, outcome.names, strict=True):
                ids[name] = nodes.segment_id(segmentationNode, name)
                self.addToSegment(segmentationNode, ids[name], volumeNode,
                                  outcome.labels == value, axis)
            return ids

        self.busyJob = BackgroundJob(work, finish, name="Automatic segmentation")
        return self.busyJob

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
