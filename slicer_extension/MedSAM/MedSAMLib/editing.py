"""Writing slice masks into segments the Segment Editor's way: one undo step per edit.

`apply_slice_mask` is the shared recipe: save the state for undo, then add/remove one-slice
labelmaps. The Segment Editor effect runs it with `scriptedEffect.saveStateForUndo` and
`scriptedEffect.modifySelectedSegmentByLabelmap` (which honour the editor's masking and overwrite
settings); `SliceEditor` runs it on Slicer's own `vtkSlicerSegmentEditorLogic` (the logic those
effect calls end in), so the module panel, batch scripts and headless tests get the same edits
and an undo history without any Qt widget.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from . import geometry as geo
from . import nodes

ModifyFn = Callable[[object, str, list[int]], None]  # (labelmap, "add"|"remove", extent)


def apply_slice_mask(volume_node, segmentation_node, mask2d: np.ndarray, axis: int, index: int,
                     mode: str, save_state: Callable[[], object], modify: ModifyFn) -> None:
    """Apply a 2D mask to slice `index` along `axis` (replace, add or remove), undoable."""
    steps = geo.edit_steps(mask2d, mode)
    save_state()
    for operation, mask in steps:
        labelmap, extent = nodes.slice_labelmap(volume_node, mask, axis, index, segmentation_node)
        modify(labelmap, operation, extent)


class SliceEditor:
    """Segment edits with undo/redo outside the Segment Editor widget.

    Uses `vtkSlicerSegmentEditorLogic` when this Slicer has it (5.9 and later, and PyPI's
    slicer-core); otherwise writes with `SetBinaryLabelmapToSegment` and has no undo.
    """

    def __init__(self, scene, app_logic=None):
        import slicer

        self.scene = scene
        self.logic = None
        self._node = None
        cls = getattr(slicer, "vtkSlicerSegmentEditorLogic", None)
        if cls is not None:
            self.logic = cls()
            if app_logic is not None:
                self.logic.SetMRMLApplicationLogic(app_logic)
            self.logic.SetMRMLScene(scene)

    def _editor_node(self):
        if self._node is None or self._node.GetScene() is None:
            self._node = self.scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode", "MedSAM editor")
            self._node.SetHideFromEditors(True)
            self.logic.SetSegmentEditorNode(self._node)
        return self._node

    def apply(self, volume_node, segmentation_node, segment_id: str, mask2d: np.ndarray,
              axis: int, index: int, mode: str = "replace") -> None:
        """Write `mask2d` into slice `index` of the segment; one undo step."""
        if self.logic is None:
            def modify(labelmap, operation, extent):
                nodes.apply_slice_labelmap(segmentation_node, segment_id, labelmap, extent,
                                           operation)

            apply_slice_mask(volume_node, segmentation_node, mask2d, axis, index, mode,
                             lambda: None, modify)
            return
        import slicer

        self._editor_node()
        self.logic.SetSegmentationNode(segmentation_node)
        self.logic.SetSourceVolumeNode(volume_node)
        self.logic.SetCurrentSegmentID(segment_id)
        modes = {"add": slicer.vtkSlicerSegmentEditorLogic.ModificationModeAdd,
                 "remove": slicer.vtkSlicerSegmentEditorLogic.ModificationModeRemove}

        def modify(labelmap, operation, extent):
            self.logic.ModifySegmentByLabelmap(segmentation_node, segment_id, labelmap,
                                               modes[operation], list(extent), True, False)

        apply_slice_mask(volume_node, segmentation_node, mask2d, axis, index, mode,
                         self.logic.SaveStateForUndo, modify)

    @property
    def canUndo(self) -> bool:
        return self.logic is not None and bool(self.logic.CanUndo())

    def undo(self) -> bool:
        """Revert the last edit; False when there is nothing to undo."""
        if not self.canUndo:
            return False
        self.logic.Undo()
        return True

    def redo(self) -> bool:
        if self.logic is None or not self.logic.CanRedo():
            return False
        self.logic.Redo()
        return True
