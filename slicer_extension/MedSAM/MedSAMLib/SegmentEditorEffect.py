"""MedSAM Segment Editor effect: drag a box or click in a slice view, the segment follows.

Left-drag: box around the object (starts a new object). Left-click: positive point,
Ctrl+left-click: negative point (refine the current object). Esc: start a new object.
Every prompt is one undo step (saveStateForUndo, then modifySelectedSegmentByLabelmap).
A finished object (Esc, the next object, or leaving the effect) is saved as a correction for
fine-tuning (the Logic's `acceptObject`; folder and on/off in the MedSAM module's Fine-tune).
Loaded by Slicer from its file path (see MedSAM.py), so imports are absolute.
"""

import logging
import os

import qt
import slicer
import vtk
from SegmentEditorEffects import AbstractScriptedSegmentEditorEffect

from MedSAMLib import editing, interaction
from MedSAMLib.logic import shared_logic

HELP = """<html>Segment with LiteMedSAM in the slice views.<p><ul style="margin: 0">
<li><b>Left-drag:</b> draw a box around the object (a new object).
<li><b>Left-click:</b> add a positive point (the object grows there).
<li><b>Ctrl+left-click:</b> add a negative point (the object shrinks there).
<li><b>Esc:</b> finish the object; the next click starts a new one.
</ul><p>Use a view aligned with the volume (Axial, Sagittal or Coronal of the volume's grid).
Ctrl+Z undoes the last prompt. Embedding the volume ahead makes every slice instant.
<p>Finished objects are saved as corrections for fine-tuning (MedSAM module > Fine-tune).</html>"""


class SegmentEditorEffect(AbstractScriptedSegmentEditorEffect):
    """Box and click prompts -> LiteMedSAM -> the selected segment, slice by slice."""

    def __init__(self, scriptedEffect):
        scriptedEffect.name = "MedSAM"  # not translated: modules find effects by name
        scriptedEffect.title = "MedSAM"
        scriptedEffect.perSegment = True
        scriptedEffect.requireSegments = True
        AbstractScriptedSegmentEditorEffect.__init__(self, scriptedEffect)
        self.trackers = {}
        self.bands = {}
        self.current = None  # interaction.ObjectOnSlice of the object being drawn
        self.job = None
        self.timer = None
        self.zoom = None  # (job, volume, segmentation, axis, index, object key) of a zoom window
        self.zoomTimer = None

    def clone(self):
        import qSlicerSegmentationsEditorEffectsPythonQt as effects

        cloned = effects.qSlicerSegmentEditorScriptedEffect(None)
        cloned.setPythonSource(__file__.replace("\\", "/"))
        return cloned

    def icon(self):
        path = os.path.join(os.path.dirname(__file__), "..", "Resources", "Icons", "MedSAM.png")
        return qt.QIcon(path) if os.path.exists(path) else qt.QIcon()

    def helpText(self):
        return HELP

    # ---- options panel ---------------------------------------------------------------------
    def setupOptionsFrame(self):
        self.modeBox = qt.QComboBox()
        self.modeBox.addItem("adds to what the slice holds", "add")
        self.modeBox.addItem("replaces the slice", "replace")
        self.modeBox.setToolTip("What a new box does to the segment on its slice.")
        self.scriptedEffect.addLabeledOptionsWidget("New object:", self.modeBox)
        self.modeBox.connect("currentIndexChanged(int)", self.updateMRMLFromGUI)
        self.embedButton = qt.QPushButton("Embed volume in background")
        self.embedButton.setToolTip("Encode every slice now so that each prompt is instant.")
        self.embedButton.connect("clicked()", self.onEmbed)
        self.statusLabel = qt.QLabel("Drag a box around the object in a slice view.")
        self.statusLabel.wordWrap = True
        self.scriptedEffect.addOptionsWidget(self.embedButton)
        self.scriptedEffect.addOptionsWidget(self.statusLabel)
        self.timer = qt.QTimer()
        self.timer.setInterval(250)
        self.timer.connect("timeout()", self.onPoll)
        self.zoomTimer = qt.QTimer()
        self.zoomTimer.setInterval(50)
        self.zoomTimer.connect("timeout()", self.onZoomPoll)

    def setMRMLDefaults(self):
        self.scriptedEffect.setParameterDefault("NewObjectMode", "add")

    def updateGUIFromMRML(self):
        index = self.modeBox.findData(self.scriptedEffect.parameter("NewObjectMode"))
        was = self.modeBox.blockSignals(True)
        self.modeBox.setCurrentIndex(max(index, 0))
        self.modeBox.blockSignals(was)

    def updateMRMLFromGUI(self):
        self.scriptedEffect.setParameter("NewObjectMode", self.modeBox.currentData)

    def deactivate(self):
        self._finish_object()
        for view, band in self.bands.items():
            self.scriptedEffect.removeActor2D(view, band[0])
        self.bands, self.trackers, self.current = {}, {}, None

    def cleanup(self):
        if self.timer is not None:
            self.timer.stop()
        if self.zoomTimer is not None:
            self.zoomTimer.stop()
        if self.job is not None:
            self.job.cancel()

    # ---- helpers ---------------------------------------------------------------------------
    def _nodes(self):
        params = self.scriptedEffect.parameterSetNode()
        getter = getattr(params, "GetSourceVolumeNode", None) or params.GetMasterVolumeNode
        return getter(), params.GetSegmentationNode(), params.GetSelectedSegmentID()

    def _say(self, text, error=False):
        self.statusLabel.text = text
        (logging.warning if error else logging.info)("MedSAM: %s", text)

    def _logic(self):
        from MedSAMLib import dependencies

        if not dependencies.ensure_installed(confirm=slicer.util.confirmOkCancelDisplay,
                                             status=lambda text: self._say(text)):
            raise RuntimeError("MedSAM needs napari-medsam: install it from the MedSAM module.")
        return shared_logic()

    def _band(self, view):
        if view not in self.bands:
            points, lines, poly = vtk.vtkPoints(), vtk.vtkCellArray(), vtk.vtkPolyData()
            poly.SetPoints(points)
            poly.SetLines(lines)
            mapper = vtk.vtkPolyDataMapper2D()
            mapper.SetInputData(poly)
            actor = vtk.vtkActor2D()
            actor.SetMapper(mapper)
            actor.GetProperty().SetColor(1.0, 0.85, 0.0)
            actor.GetProperty().SetLineWidth(2)
            self.scriptedEffect.addActor2D(view, actor)
            self.bands[view] = (actor, points, lines, poly)
        return self.bands[view]

    def _draw_band(self, view, rect):
        actor, points, lines, poly = self._band(view)
        points.Reset()
        lines.Initialize()
        if rect is not None:
            outline = interaction.rectangle_points(*rect)
            for x, y in outline:
                points.InsertNextPoint(x, y, 0)
            lines.InsertNextCell(len(outline), list(range(len(outline))))
        poly.Modified()
        view.sliceView().scheduleRender()

    # ---- events ----------------------------------------------------------------------------
    def processInteractionEvents(self, callerInteractor, eventId, viewWidget):
        if viewWidget.className() != "qMRMLSliceWidget":
            return False
        tracker = self.trackers.setdefault(viewWidget, interaction.GestureTracker())
        xy = callerInteractor.GetEventPosition()
        if eventId == vtk.vtkCommand.LeftButtonPressEvent and not callerInteractor.GetShiftKey():
            confirmed = self.scriptedEffect.confirmCurrentSegmentVisible()
            if confirmed != self.scriptedEffect.ConfirmedWithoutDialog:
                return True
            tracker.press(xy, negative=bool(callerInteractor.GetControlKey()))
            return True
        if eventId == vtk.vtkCommand.MouseMoveEvent and tracker.active:
            self._draw_band(viewWidget, tracker.move(xy))
            return True
        if eventId == vtk.vtkCommand.LeftButtonReleaseEvent and tracker.active:
            gesture = tracker.release(xy)
            self._draw_band(viewWidget, None)
            self._prompt(viewWidget, gesture)
            return True
        if eventId == vtk.vtkCommand.KeyPressEvent and callerInteractor.GetKeySym() == "Escape":
            saved = self._finish_object()
            self._say("Object finished" + (" and saved as a correction" if saved else "")
                      + ". Drag a box around the next object.")
            return True
        return False

    def _prompt(self, view, gesture):
        volume, segmentation, segment_id = self._nodes()
        if volume is None or segmentation is None or not segment_id:
            self._say("Select a source volume and a segment first.", error=True)
            return
        qt.QApplication.setOverrideCursor(qt.Qt.WaitCursor)
        try:
            logic = self._logic()
            slice_to_ras = view.sliceLogic().GetSliceNode().GetSliceToRAS()
            normal = [slice_to_ras.GetElement(i, 2) for i in range(3)]
            axis = logic.axisForSliceNormal(volume, normal)
            start = self.xyToRas([round(v) for v in gesture.start], view)
            if gesture.kind == "box":
                end = self.xyToRas([round(v) for v in gesture.end], view)
                prompt = logic.promptFromRAS(volume, [start, end], axis)
                self._start_object(logic, volume, segmentation, segment_id, axis, prompt.index)
                prompt, mask = logic.setBoxRAS(volume, start, end, axis, deferZoom=True)
            else:
                prompt = logic.promptFromRAS(volume, [start], axis)
                key = self._key(volume, segmentation, segment_id, axis, prompt.index)
                if self.current is None or self.current.key != key:
                    self._start_object(logic, volume, segmentation, segment_id, axis,
                                       prompt.index)
                prompt, mask = logic.addPointRAS(volume, start, gesture.positive, axis,
                                                 deferZoom=True)
            self._write(volume, segmentation, mask, axis, prompt.index)
            self._say(f"Slice {prompt.index}: {int(mask.sum())} voxels. Click to refine, "
                      "Ctrl+click to remove, Esc for a new object.")
            self._zoom_later(logic, volume, segmentation, axis, prompt.index)
        except Exception as exc:  # shown to the user, never a crash of the editor
            logging.exception("MedSAM prompt failed")
            self._say(str(exc), error=True)
        finally:
            qt.QApplication.restoreOverrideCursor()

    @staticmethod
    def _key(volume, segmentation, segment_id, axis, index):
        return (volume.GetID(), segmentation.GetID(), segment_id, axis, index)

    def _finish_object(self):
        """The object is done: the Logic saves it as a correction (when saving is on) and clears
        its prompts. Returns the correction's id (None: nothing saved). Never raises."""
        current, self.current = self.current, None
        if current is None:
            return None
        volume_id, segmentation_id, segment_id, axis, index = current.key
        scene = slicer.mrmlScene
        volume, segmentation = scene.GetNodeByID(volume_id), scene.GetNodeByID(segmentation_id)
        if volume is None or segmentation is None:
            return None
        try:
            return shared_logic().acceptObject(volume, axis, segmentation, segment_id, index)
        except Exception as exc:  # the segment is written already; say why it was not saved
            logging.exception("MedSAM: saving the correction failed")
            self._say(f"The object is in the segment but was not saved as a correction: {exc}",
                      error=True)
            return None

    def _start_object(self, logic, volume, segmentation, segment_id, axis, index):
        """Finish the previous object, then remember the slice as it is before this one (kept
        under every refinement)."""
        import numpy as np

        self._finish_object()
        logic.resetPrompts(volume, axis)
        key = self._key(volume, segmentation, segment_id, axis, index)
        if self.modeBox.currentData == "replace":
            base = np.zeros(logic.sliceShape(volume, axis), bool)
        else:
            stack = logic.segmentStack(segmentation, segment_id, volume, axis)
            base = stack[index] > 0
        self.current = interaction.ObjectOnSlice(key, base)

    def _write(self, volume, segmentation, mask, axis, index):
        modes = {"add": slicer.qSlicerSegmentEditorAbstractEffect.ModificationModeAdd,
                 "remove": slicer.qSlicerSegmentEditorAbstractEffect.ModificationModeRemove}

        def modify(labelmap, operation, extent):
            self.scriptedEffect.modifySelectedSegmentByLabelmap(labelmap, modes[operation],
                                                                list(extent))

        content = self.current.slice_content(mask)
        editing.apply_slice_mask(volume, segmentation, content, axis, index, "replace",
                                 self.scriptedEffect.saveStateForUndo, modify)

    # ---- zoom on small objects, off the main thread -------------------------------------------
    def _zoom_later(self, logic, volume, segmentation, axis, index):
        """The prompt's object is small and its zoom window not encoded yet: the whole-slice
        mask is shown now, the window encoded in a thread, the zoomed mask written after."""
        job = logic.startZoom(volume, axis)
        if job is None:
            return
        self.zoom = (job, volume, segmentation, axis, index, self.current.key)
        self._say("Zooming in on the small object...")
        self.zoomTimer.start()

    def onZoomPoll(self):
        if self.zoom is None:
            self.zoomTimer.stop()
            return
        job, volume, segmentation, axis, index, key = self.zoom
        try:
            if not job.poll():
                return
        except Exception as exc:  # the whole-slice mask stays in the segment
            logging.exception("MedSAM zoom failed")
            self.zoomTimer.stop()
            self.zoom = None
            self._say(f"Zooming in on the small object failed ({exc}); the mask is kept.",
                      error=True)
            return
        self.zoomTimer.stop()
        self.zoom = None
        if job.finished_result is None or self.current is None or self.current.key != key:
            return  # the user moved on: that prompt zooms for itself
        _, mask = job.finished_result
        self._write(volume, segmentation, mask, axis, index)
        self._say(f"Slice {index}: {int(mask.sum())} voxels (zoomed in). Click to refine, "
                  "Ctrl+click to remove, Esc for a new object.")
        self._zoom_later(shared_logic(), volume, segmentation, axis, index)

    # ---- background embedding ----------------------------------------------------------------
    def onEmbed(self):
        volume, _, _ = self._nodes()
        if volume is None:
            self._say("Select a source volume first.", error=True)
            return
        try:
            self.job = self._logic().startEmbedding(volume)
        except Exception as exc:
            self._say(str(exc), error=True)
            return
        self.embedButton.enabled = False
        self.timer.start()

    def onPoll(self):
        if self.job is None:
            self.timer.stop()
            return
        try:
            finished = self.job.poll()
        except Exception as exc:
            finished = True
            self._say(f"Embedding failed: {exc}", error=True)
        else:
            self._say(self.job.message())
        if finished:
            self.timer.stop()
            self.embedButton.enabled = True
            self.job = None
