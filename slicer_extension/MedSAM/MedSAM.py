"""MedSAM: LiteMedSAM segmentation in 3D Slicer on napari-medsam's shared core.

Module (metadata, registers the Segment Editor effect), Widget (the panel: embed, propagate,
automatic heads, echo sequences, fine-tuning on corrections (MedSAMLib/finetune_section.py),
adapters, installation), Logic (GUI-free, in MedSAMLib/logic.py)
and Test (a self-test run from Slicer's Developer Tools). napari-medsam is installed on first use.
"""

import logging
import os
import tempfile

import ctk  # noqa: F401  (loads the ctk widgets the .ui file uses)
import numpy as np
import qt
import slicer
from MedSAMLib import dependencies, features, nodes
from MedSAMLib.finetune_section import FinetuneSection
from MedSAMLib.logic import MedSAMLogic as CoreLogic
from MedSAMLib.logic import shared_logic
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

PRESETS = ["auto", "as-is", "mri", "ct-soft-tissue", "ct-abdomen", "ct-lung", "ct-bone",
           "ct-brain"]
DEFAULT_PROFILE = "torch"


class MedSAM(ScriptedLoadableModule):
    """Module metadata; registers the MedSAM Segment Editor effect once Slicer has started."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "MedSAM"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = ["Segmentations", "SegmentEditor"]
        self.parent.contributors = ["napari-medsam contributors"]
        self.parent.helpText = (
            "Segment organs and lesions with LiteMedSAM: drag a box or click in the slice views "
            "(Segment Editor > MedSAM), propagate through slices or echo frames, run automatic "
            "heads, fine-tune an adapter on your corrections. The model runs on this computer; "
            "nothing is uploaded."
        )
        self.parent.acknowledgementText = (
            "LiteMedSAM by Jun Ma et al. (MedSAM, Nature Communications 2024); "
            "Segment Anything by Meta AI. Built on napari-medsam's shared core."
        )
        slicer.app.connect("startupCompleted()", registerEffect)


def plain_words(exc):
    """The message napari and the CLI give for this failure (napari_medsam.core.report): the
    error's own words, or for a bug a short note naming the log file with the traceback."""
    try:
        from napari_medsam.core.report import user_message
    except ImportError:  # napari-medsam not installed yet
        return str(exc)
    return user_message(exc, "Slicer")


def registerEffect():
    """Add the MedSAM effect to the Segment Editor."""
    import qSlicerSegmentationsEditorEffectsPythonQt as effects

    instance = effects.qSlicerSegmentEditorScriptedEffect(None)
    path = os.path.join(os.path.dirname(__file__), "MedSAMLib", "SegmentEditorEffect.py")
    instance.setPythonSource(path.replace("\\", "/"))
    instance.self().register()


class MedSAMLogic(ScriptedLoadableModuleLogic, CoreLogic):
    """The GUI-free Logic of MedSAMLib with Slicer's parameter node support."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        CoreLogic.__init__(self)


class MedSAMWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The MedSAM panel. Long work runs in background jobs polled by a QTimer."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.job = None
        self.timer = None
        self.finetune = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MedSAM.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.timer = qt.QTimer()
        self.timer.setInterval(200)
        self.timer.connect("timeout()", self.onPoll)
        self.ui.presetComboBox.addItems(PRESETS)
        self.ui.presetComboBox.editable = True  # ct-custom:LEVEL,WIDTH
        self.fillChoices()
        self.ui.volumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onVolumeChanged)
        self.ui.presetComboBox.connect("currentTextChanged(QString)", self.onPresetChanged)
        self.ui.profileComboBox.connect("currentTextChanged(QString)", self.onProfileChanged)
        for name, slot in (
            ("embedButton", self.onEmbed), ("cancelButton", self.onCancel),
            ("openEditorButton", self.onOpenEditor), ("propagateButton", self.onPropagate),
            ("autoButton", self.onAuto), ("stackButton", self.onStack),
            ("exportSequenceButton", self.onExportSequence), ("adapterButton", self.onAdapter),
            ("installButton", self.onInstall), ("updateButton", self.onUpdate),
        ):
            getattr(self.ui, name).connect("clicked()", slot)
        self.finetune = FinetuneSection(self)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneClose)
        self.updateStatus()
        if dependencies.installed("napari_medsam"):  # never asks to install from here
            qt.QTimer.singleShot(300, self.warmUp)

    def warmUp(self):
        """Prepare the model of the chosen profile in a thread once the panel is shown, so the
        first embedding does not wait for it to load or compile (napari's dock does the same)."""
        try:
            self.getLogic().warmInBackground()
        except Exception as exc:  # the first real action reports it in plain words
            logging.info("MedSAM: could not prepare the model ahead: %s", exc)

    def enter(self):
        if self.finetune is not None:
            self.finetune.refresh()  # objects accepted in the Segment Editor meanwhile

    def cleanup(self):
        if self.timer is not None:
            self.timer.stop()
        if self.job is not None:
            self.job.cancel()
        if self.finetune is not None:
            self.finetune.cleanup()
        self.removeObservers()

    # ---- helpers ---------------------------------------------------------------------------
    def fillChoices(self):
        """Profiles and propagation modes offered by the installed core."""
        have_core = dependencies.installed("napari_medsam")
        self.ui.profileComboBox.clear()
        self.ui.profileComboBox.addItems(
            [DEFAULT_PROFILE] + (features.profile_names() if have_core else []))
        modes = features.propagation_modes() if have_core else []
        self.ui.propagationModeComboBox.clear()
        self.ui.propagationModeComboBox.addItems(modes or ["volume", "time"])
        self.ui.propagateButton.enabled = bool(modes)
        self.ui.autoButton.enabled = have_core and features.has("auto")
        self.ui.adapterButton.enabled = have_core and features.has("adapters")

    def say(self, text, error=False):
        self.ui.statusLabel.text = text
        (logging.warning if error else logging.info)("MedSAM: %s", text)
        if error:
            slicer.util.errorDisplay(text, windowTitle="MedSAM")

    def updateStatus(self):
        if not dependencies.installed("napari_medsam"):
            self.ui.statusLabel.text = ("napari-medsam is not installed yet: it is installed "
                                        "the first time you use MedSAM.")
        elif self.ui.volumeSelector.currentNode() is None:
            self.ui.statusLabel.text = "Select a volume."

    def getLogic(self):
        """The shared Logic, installing napari-medsam first if needed (asks the user)."""
        if self.logic is None:
            spec = self.ui.packageLineEdit.text.strip() or dependencies.DEFAULT_SPEC
            if not dependencies.ensure_installed(slicer.util.confirmOkCancelDisplay,
                                                 self.say, spec,
                                                 self.ui.installTorchCheckBox.checked):
                raise RuntimeError("MedSAM cannot run without napari-medsam.")
            self.fillChoices()
            self.logic = shared_logic(MedSAMLogic)
            default = features.default_profile()  # auto: torch on a GPU, else ONNX Runtime
            if default and self.ui.profileComboBox.currentText == DEFAULT_PROFILE:
                self.ui.profileComboBox.setCurrentText(default)
            self.onPresetChanged(self.ui.presetComboBox.currentText)
            self.onProfileChanged(self.ui.profileComboBox.currentText)
            self.finetune.fill()
            self.finetune.apply(self.logic)
        return self.logic

    def inputs(self, need_segment=True):
        volume = self.ui.volumeSelector.currentNode()
        segmentation = self.ui.segmentSelector.currentNode()
        segment_id = self.ui.segmentSelector.currentSegmentID()
        if volume is None:
            raise ValueError("Select a volume first.")
        if need_segment and (segmentation is None or not segment_id):
            raise ValueError("Select (or add) a segmentation and a segment first.")
        return volume, segmentation, segment_id

    def redSlice(self, volume):
        """(axis, index) of the volume slice shown in the Red view."""
        logic = self.getLogic()
        slice_node = slicer.app.layoutManager().sliceWidget("Red").mrmlSliceNode()
        m = slice_node.GetSliceToRAS()
        normal = [m.GetElement(i, 2) for i in range(3)]
        center = [m.GetElement(i, 3) for i in range(3)]
        axis = logic.axisForSliceNormal(volume, normal)
        return axis, logic.promptFromRAS(volume, [center], axis).index

    def run(self, job):
        self.job = job
        for name in ("embedButton", "propagateButton", "autoButton"):
            getattr(self.ui, name).enabled = False
        self.ui.cancelButton.enabled = True
        self.ui.progressBar.value = 0
        self.timer.start()

    def guarded(self, action):
        """Run a button's action; errors become a message box, never a traceback dialog."""
        try:
            with slicer.util.WaitCursor():
                return action()
        except Exception as exc:
            logging.exception("MedSAM action failed")
            self.say(plain_words(exc), error=True)

    # ---- slots -----------------------------------------------------------------------------
    def onVolumeChanged(self, node):
        self.updateStatus()
        segmentation = self.ui.segmentSelector.currentNode()
        if node is not None and segmentation is not None \
                and segmentation.GetSegmentation().GetNumberOfSegments() == 0:
            segmentation.SetReferenceImageGeometryParameterFromVolumeNode(node)

    def onPresetChanged(self, text):
        if self.logic is not None and text:
            self.guarded(lambda: self.logic.setPreset(text.strip()))

    def onProfileChanged(self, text):
        if self.logic is not None and text:
            self.logic.setProfile(None if text == DEFAULT_PROFILE else text)

    def onEmbed(self):
        def start():
            volume = self.inputs(need_segment=False)[0]
            axis, index = self.redSlice(volume)
            self.run(self.getLogic().startEmbedding(volume, axis, index))

        self.guarded(start)

    def onCancel(self):
        if self.job is not None:
            self.job.cancel()
            self.ui.statusLabel.text = "Cancelling... finished slices are kept."

    def onOpenEditor(self):
        def open_editor():
            volume, segmentation, segment_id = self.inputs(need_segment=False)
            slicer.util.selectModule("SegmentEditor")
            editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
            if segmentation is not None:
                editor.setSegmentationNode(segmentation)
            setter = getattr(editor, "setSourceVolumeNode", None) or editor.setMasterVolumeNode
            setter(volume)
            if segment_id:
                editor.setCurrentSegmentID(segment_id)
            editor.setActiveEffectByName("MedSAM")

        self.guarded(open_editor)

    def onPropagate(self):
        def start():
            volume, segmentation, segment_id = self.inputs()
            axis, index = self.redSlice(volume)
            self.run(self.getLogic().startPropagation(
                volume, segmentation, segment_id, index, axis,
                self.ui.propagationModeComboBox.currentText, self.ui.directionComboBox.currentText))

        self.guarded(start)

    def onAuto(self):
        def start():
            volume, segmentation, _ = self.inputs(need_segment=False)
            if segmentation is None:
                raise ValueError("Select (or add) a segmentation first.")
            head = self.ui.autoHeadPathLineEdit.currentPath.strip()
            if not head:
                raise ValueError("Choose an automatic-segmentation head first.")
            axis, _ = self.redSlice(volume)
            self.run(self.getLogic().startAuto(volume, segmentation, head, axis=axis))

        self.guarded(start)

    def onStack(self):
        def stack():
            sequence = self.ui.sequenceSelector.currentNode()
            if sequence is None:
                raise ValueError("Select a sequence of echo frames first.")
            volume = self.getLogic().volumeFromSequence(sequence)
            self.ui.volumeSelector.setCurrentNode(volume)
            slicer.util.setSliceViewerLayers(background=volume, fit=True)
            self.say(f"'{volume.GetName()}' holds the {volume.GetImageData().GetDimensions()[2]} "
                     "frames as slices. Segment one frame, then propagate with mode 'time'.")

        self.guarded(stack)

    def onExportSequence(self):
        def export():
            volume, segmentation, segment_id = self.inputs()
            sequence = self.ui.sequenceSelector.currentNode()
            if sequence is None:
                raise ValueError("Select the sequence the volume was made from.")
            out = self.getLogic().exportToSequence(segmentation, segment_id, volume, sequence)
            self.say(f"Wrote '{out.GetName()}' ({out.GetNumberOfDataNodes()} frames). Add it to "
                     "the sequence browser to play it with the loop.")

        self.guarded(export)

    def onAdapter(self):
        path = self.ui.adapterPathLineEdit.currentPath.strip() or None
        self.guarded(lambda: self.say(self.getLogic().loadAdapter(path)))

    def onInstall(self):
        self.guarded(self.getLogic)
        self.updateStatus()

    def onUpdate(self):
        spec = self.ui.packageLineEdit.text.strip() or dependencies.DEFAULT_SPEC
        if slicer.util.confirmOkCancelDisplay(f"Update {spec} now? Restart Slicer afterwards."):
            self.guarded(lambda: dependencies.upgrade(spec))
            self.say("Updated. Restart Slicer to use the new version.")

    def onSceneClose(self, caller, event):
        if self.job is not None:
            self.job.cancel()

    def onPoll(self):
        job = self.job
        if job is None:
            self.timer.stop()
            return
        self.ui.progressBar.value = int(100 * job.fraction)
        self.ui.statusLabel.text = job.message()
        try:
            finished = job.poll()
        except Exception as exc:
            finished = True
            logging.exception("MedSAM job failed")
            self.say(f"{job.name} failed: {plain_words(exc)}", error=True)
        else:
            if finished:
                summary = getattr(job.finished_result, "summary", None)
                self.ui.statusLabel.text = summary or job.message()
        if finished:
            self.timer.stop()
            self.job = None
            self.ui.cancelButton.enabled = False
            self.fillChoices()
            self.ui.embedButton.enabled = True


class MedSAMTest(ScriptedLoadableModuleTest):
    """Self-test inside Slicer (Developer Tools > Reload and Test). Accuracy against ground truth
    is tested headless in CI (tests/slicer); this checks the real application's wiring."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_box_click_undo_on_sample()

    def test_box_click_undo_on_sample(self):
        if not dependencies.installed("napari_medsam"):
            self.skipTest("napari-medsam is not installed (open the MedSAM module once).")
        import SampleData

        volume = SampleData.downloadSample("MRHead")
        logic = MedSAMLogic()
        project = tempfile.TemporaryDirectory()  # never into the user's own corrections
        logic.setCorrectionsFolder(project.name)
        segmentation = nodes.add_segmentation(slicer.mrmlScene, volume)
        segment_id = nodes.segment_id(segmentation, "head")
        array = slicer.util.arrayFromVolume(volume)
        index = array.shape[0] // 2
        rows, cols = np.nonzero(array[index] > np.percentile(array[index], 60))
        box = [cols.min(), rows.min(), cols.max(), rows.max()]
        mask = logic.segmentBox(volume, segmentation, segment_id, box, index)
        result = nodes.segment_array(segmentation, segment_id, volume)
        self.assertTrue(result[index].any())
        self.assertEqual(int(result.sum()), int(mask.sum()))
        self.assertEqual(logic.correctionsCount(), 1)  # the accepted box, saved for fine-tuning
        project.cleanup()
        matrix, _ = nodes.labelmap_geometry(segmentation, segment_id)
        np.testing.assert_allclose(matrix, nodes.ijk_to_ras_matrix(volume), atol=1e-6)
        if logic.editor(slicer.mrmlScene).logic is not None:  # Slicer >= 5.9: undoable edits
            self.assertTrue(logic.undoEdit())
            self.assertFalse(nodes.segment_array(segmentation, segment_id, volume).any())
        names = [e.name for e in slicer.qSlicerSegmentEditorEffectFactory.instance()
                 .registeredEffects()]
        self.assertIn("MedSAM", names)
        self.delayDisplay("MedSAM test passed")
