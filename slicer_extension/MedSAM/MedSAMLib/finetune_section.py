"""The module panel's Fine-tune section (Qt): corrections folder and count, "Save segment as
corrections", name / modality / steps, Fine-tune and Cancel with a progress bar and the live
validation Dice, then "Use this adapter". The work is the Logic's (logic_corrections.py); this
only reads the widgets, starts the background job and polls it from a QTimer, as the rest of
the panel does. Mirrors napari-medsam's `annotator/panel_finetune.py`.
"""

import logging

import qt
import slicer

SETTINGS_KEY = "MedSAM/CorrectionsFolder"


def modalities():
    """The modalities offered (the core's list once napari-medsam is installed)."""
    try:
        from napari_medsam.core.corrections import MODALITIES
    except ImportError:  # first start: napari-medsam is installed on first use
        return ["any"]
    return list(MODALITIES)


class FinetuneSection:
    """Wires the Fine-tune widgets of MedSAM.ui; `widget` is the module's MedSAMWidget (its
    `ui`, `getLogic`, `guarded`, `say`, `inputs` and `redSlice`)."""

    def __init__(self, widget):
        self.widget = widget
        self.ui = widget.ui
        self.job = None
        self.timer = qt.QTimer()
        self.timer.setInterval(300)
        self.timer.connect("timeout()", self.onPoll)
        self.fill()
        folder = qt.QSettings().value(SETTINGS_KEY, "")
        if folder:
            self.ui.correctionsPathLineEdit.currentPath = folder
        for name, slot in (
            ("saveSegmentButton", self.onSaveSegment), ("finetuneButton", self.onStart),
            ("finetuneCancelButton", self.onCancel), ("useAdapterButton", self.onUse),
        ):
            getattr(self.ui, name).connect("clicked()", slot)
        self.ui.saveCorrectionsCheckBox.connect("toggled(bool)", lambda _: self.apply())
        self.ui.correctionsPathLineEdit.connect("currentPathChanged(QString)", self.onFolder)
        self.ui.modalityComboBox.connect("currentTextChanged(QString)", lambda _: self.apply())
        self.ui.finetuneCollapsibleButton.connect("contentsCollapsed(bool)",
                                                  lambda _: self.refresh())

    def fill(self):
        """Modalities, and the default corrections folder once the core is installed."""
        current = self.ui.modalityComboBox.currentText
        self.ui.modalityComboBox.clear()
        self.ui.modalityComboBox.addItems(modalities())
        if current:
            self.ui.modalityComboBox.setCurrentText(current)
        if not self.ui.correctionsPathLineEdit.currentPath.strip():
            try:
                from napari_medsam.core.corrections import default_project_dir
            except ImportError:
                return
            self.ui.correctionsPathLineEdit.currentPath = str(default_project_dir())

    def cleanup(self):
        self.timer.stop()
        if self.job is not None:
            self.job.cancel()

    # ---- the Logic's settings -----------------------------------------------------------
    def modality(self):
        return self.ui.modalityComboBox.currentText.strip().lower() or "any"

    def apply(self, logic=None):
        """Give the panel's settings to the Logic (when it exists already, or `logic`)."""
        logic = logic or self.widget.logic
        if logic is None:
            return
        logic.saveCorrections = bool(self.ui.saveCorrectionsCheckBox.checked)
        logic.setCorrectionsFolder(self.ui.correctionsPathLineEdit.currentPath.strip() or None)
        logic.modality = self.modality()
        self.refresh()

    def onFolder(self, path):
        qt.QSettings().setValue(SETTINGS_KEY, path)
        self.apply()

    def refresh(self):
        """Show how many corrections the folder holds."""
        logic = self.widget.logic
        if logic is None:
            return
        try:
            n = logic.correctionsCount()
        except Exception:  # an unreadable folder: say so instead of a count
            logging.exception("MedSAM: counting corrections failed")
            self.ui.correctionsCountLabel.text = "Folder not readable"
            return
        self.ui.correctionsCountLabel.text = f"{n} correction{'s' * (n != 1)} saved"
        self.ui.correctionsCountLabel.toolTip = f"Corrections folder: {logic.correctionsPath()}"

    # ---- slots -----------------------------------------------------------------------------
    def onSaveSegment(self):
        def save():
            volume, segmentation, segment_id = self.widget.inputs()
            axis, _ = self.widget.redSlice(volume)
            logic = self.widget.getLogic()
            self.apply(logic)
            n = logic.saveSegmentAsCorrections(volume, segmentation, segment_id, axis)
            name = segmentation.GetSegmentation().GetSegment(segment_id).GetName()
            self.widget.say(f"Saved {n} slice{'s' * (n != 1)} of '{name}' as corrections.")
            self.refresh()

        self.widget.guarded(save)

    def onStart(self):
        def start():
            logic = self.widget.getLogic()
            self.apply(logic)
            steps = int(self.ui.finetuneStepsSpinBox.value)
            self.job = logic.startFinetune(self.ui.adapterNameLineEdit.text, self.modality(),
                                           steps=steps)
            self.ui.finetuneButton.enabled = False
            self.ui.useAdapterButton.enabled = False
            self.ui.finetuneCancelButton.enabled = True
            self.ui.finetuneProgressBar.maximum = steps
            self.ui.finetuneProgressBar.value = 0
            self.ui.finetuneStatusLabel.text = "Starting…"
            self.timer.start()

        self.widget.guarded(start)

    def onCancel(self):
        if self.job is not None:
            self.job.cancel()
            self.ui.finetuneStatusLabel.text = "Stopping after the current step…"

    def onUse(self):
        def use():
            logic = self.widget.getLogic()
            self.widget.say(logic.useTrainedAdapter())
            self.ui.adapterPathLineEdit.currentPath = str(logic.trainedAdapter)

        self.widget.guarded(use)

    def onPoll(self):
        job = self.job
        if job is None:
            self.timer.stop()
            return
        state = self.widget.logic.finetuneState
        if job.total:  # known from the first step on (set to the steps asked for before)
            self.ui.finetuneProgressBar.maximum = job.total
        self.ui.finetuneProgressBar.value = job.done
        if not job.cancelled:
            self.ui.finetuneStatusLabel.text = state.text
        try:
            finished = job.poll()
        except Exception as exc:
            finished = True
            self.failed(exc)
        else:
            if finished:
                self.ui.finetuneStatusLabel.text = state.text
                self.ui.useAdapterButton.enabled = True
        if finished:
            self.timer.stop()
            self.job = None
            self.ui.finetuneButton.enabled = True
            self.ui.finetuneCancelButton.enabled = False
            self.refresh()

    def failed(self, exc):
        from napari_medsam.core.errors import CancelledError, MedSAMError

        if isinstance(exc, CancelledError):
            self.ui.finetuneStatusLabel.text = ("Fine-tuning cancelled; nothing was saved and "
                                                "the adapter in use is unchanged.")
            return
        text = str(exc) if isinstance(exc, MedSAMError) else (
            f"Fine-tuning failed ({type(exc).__name__}: {exc}). Your corrections and the "
            "adapter in use are unchanged.")
        logging.error("MedSAM: %s", text)
        self.ui.finetuneStatusLabel.text = text
        slicer.util.errorDisplay(text, windowTitle="MedSAM")
