"""Fine-tune box of the dock: corrections are saved on Accept; one button trains on them.

Every accepted object is written at once to the corrections folder (core/corrections.py), so
nothing is lost on a crash and the folder doubles as training data. "Fine-tune" trains a LoRA
adapter on it in the background (its own progress bar, live validation Dice, Cancel); "Use this
adapter" then switches the model to it. A decoder adapter keeps every embedding valid.
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QGroupBox,
    QLabel,
    QLineEdit,
    QProgressBar,
    QVBoxLayout,
)

from ..core.corrections import MODALITIES
from ..core.errors import CancelledError, InputError, MedSAMError
from .controls import button, combo, row
from .host import Host
from .jobs import FinetuneRequest, finetune_work, in_thread
from .workers import JobRunner


class FinetunePanel:
    """Corrections folder, count, Fine-tune / Cancel, progress and "Use this adapter"."""

    def __init__(self, host: Host):
        from ..core.corrections import default_project_dir

        self.host = host
        self.trained: Path | None = None  # the adapter the last run saved
        self.history: list[dict] = []  # validation Dice after each check of the last run
        self.last_error: str | None = None
        self.folder = Path(default_project_dir())
        self.group = QGroupBox("Fine-tune on your corrections")
        box = QVBoxLayout(self.group)
        self.save_check = QCheckBox("Save accepted objects as corrections")
        self.save_check.setChecked(True)
        self.save_check.setToolTip("Each accepted object (image, mask, prompts) is written at "
                                   "once to the corrections folder: training data for "
                                   "Fine-tune.")
        self.save_check.toggled.connect(lambda _: self.bind_all())
        box.addWidget(self.save_check)
        self.count_label = QLabel()
        self.count_label.setWordWrap(True)
        folder_button = button("Folder…", self._pick_folder,
                               "Choose the corrections folder (one per annotation project).")
        line = row(self.count_label, folder_button)
        line.setStretch(0, 1)
        box.addLayout(line)
        self.name_edit = QLineEdit("my-adapter")
        self.name_edit.setToolTip("Name of the adapter to save (letters, digits, - and _).")
        self.modality_combo = combo(MODALITIES, "Modality the adapter is for: adapters are "
                                    "kept per modality and offered under 'Adapter'.", True)
        self.modality_combo.currentTextChanged.connect(lambda _: self.bind_all())
        line = row(QLabel("Name"), self.name_edit, self.modality_combo)
        line.setStretch(1, 1)
        box.addLayout(line)
        self.train_button = button("Fine-tune", self.start, "Train a small LoRA adapter on the "
                                   "saved corrections in the background (a few minutes).")
        self.cancel_button = button("Cancel", None, "Stop training; the adapter in use "
                                    "stays as it is.")
        self.use_button = button("Use this adapter", self.use, "Switch the model to the "
                                 "adapter just trained.")
        self.use_button.setEnabled(False)
        box.addLayout(row(self.train_button, self.cancel_button, self.use_button))
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        box.addWidget(self.progress)
        self.status = QLabel("Accept objects, then press Fine-tune.")
        self.status.setWordWrap(True)
        box.addWidget(self.status)
        self.runner = JobRunner(self.progress, self.cancel_button, (self.train_button,),
                                lambda: self.status.setText("Stopping after the current step…"))
        self.refresh()

    # ---- corrections -----------------------------------------------------------------------
    def store(self):
        from ..core.corrections import CorrectionStore

        return CorrectionStore(self.folder)

    def bind(self, ann) -> None:
        """Make `ann`'s session save every commit to the corrections folder (when asked)."""
        session = ann.session
        if session is None:
            return
        session.corrections = self.store() if self.save_check.isChecked() else None
        source = getattr(getattr(ann.image, "source", None), "path", None)
        session.source = str(source) if source else ann.image.name
        session.modality = self.modality()

    def bind_all(self) -> None:
        for ann in self.host.annotations():
            self.bind(ann)
        self.refresh()

    def set_folder(self, folder: str | Path) -> None:
        """Save corrections to (and train on) `folder` from now on."""
        self.folder = Path(folder)
        self.bind_all()

    def _pick_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self.group, "Corrections folder",
                                                  str(self.folder))
        if folder:
            self.set_folder(folder)

    def count(self) -> int:
        if not (self.folder / "corrections").is_dir():
            return 0
        return len(self.store())

    def refresh(self) -> None:
        """Show how many corrections the folder holds."""
        n = self.count()
        self.count_label.setText(f"{n} correction{'s' * (n != 1)} saved")
        self.count_label.setToolTip(f"Corrections folder: {self.folder}")

    def modality(self) -> str:
        return self.modality_combo.currentText().strip().lower() or "any"

    # ---- training --------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.runner.running

    def _out(self) -> Path:
        from ..core.adapter_registry import new_adapter_path

        return new_adapter_path(self.name_edit.text(), self.modality())

    def start(self, steps: int = 80, minutes: float | None = None) -> None:
        """Train in the background on the saved corrections (several hundred objects run
        `steps` optimizer steps of 4 objects; ~3 minutes on 2 CPU cores)."""
        self.host.guard(self._start, steps, minutes)

    def _start(self, steps: int, minutes: float | None) -> None:
        if self.runner.running:
            raise InputError("Fine-tuning is running already: wait or press Cancel.")
        if self.count() == 0:
            raise InputError(f"No corrections are saved in {self.folder} yet: accept objects "
                             "first (with 'Save accepted objects as corrections' ticked).")
        request = FinetuneRequest(self.host.engine, self.host.spec(), self.folder, self._out(),
                                  self.modality(), steps, minutes)
        self.history, self.trained, self.last_error = [], None, None
        self.use_button.setEnabled(False)
        self.status.setText("Starting…")

        def work(emit, stopped):
            return finetune_work(request, emit, stopped)

        self.runner.start("Fine-tuning", lambda stop: in_thread(work, stop), self._on_message,
                          lambda aborted: self.refresh())

    def _on_message(self, msg: tuple) -> None:
        kind = msg[0]
        if kind == "status":
            self.status.setText(msg[1])
        elif kind == "start":
            n_train, n_val, steps = msg[1:]
            self.progress.setRange(0, steps)
            self.progress.setValue(0)
            self.status.setText(f"Training on {n_train} objects, validating on {n_val}…")
        elif kind == "progress" and msg[3].val:
            p = msg[3]
            self.history.append({"step": p.step, **p.val})
            dice = ", ".join(f"{k} {v:.3f}" for k, v in p.val.items())
            self.status.setText(f"Step {p.step}/{p.steps}. Validation Dice: {dice}")
        elif kind == "done":
            result, out = msg[1]
            self.trained = Path(out)
            before, after = result.val_before, result.val_after
            change = ", ".join(f"{k} {before[k]:.3f} → {after.get(k, float('nan')):.3f}"
                               for k in before)
            self.status.setText(f"Saved {out.name} ({result.steps} steps, "
                                f"{result.seconds / 60:.1f} min). Validation Dice: {change}.")
            self.use_button.setEnabled(True)
        elif kind == "error":
            exc = msg[1]
            if isinstance(exc, CancelledError):
                text = "Fine-tuning cancelled; the adapter in use is unchanged."
                self.host.notify("info", text)
            else:
                text = str(exc) if isinstance(exc, MedSAMError) else (
                    f"Fine-tuning failed ({type(exc).__name__}: {exc}). Your corrections and "
                    "the adapter in use are unchanged.")
                self.host.notify("error", text)
            self.last_error = text
            self.status.setText(text)

    def cancel(self) -> None:
        """Stop training after the current step; the adapter in use stays as it is."""
        self.runner.cancel()

    def wait(self, timeout_s: float = 600.0) -> None:
        """Block until training ends; for scripts and tests."""
        self.runner.wait(timeout_s)

    def use(self) -> None:
        """Switch the model to the adapter the last run saved."""
        if self.trained is None:
            self.host.notify("warning", "No adapter was trained in this session yet.")
            return
        self.host.use_adapter(str(self.trained), f"{self.modality()}/{self.trained.name}")
        self.host.notify("info", f"Now using the adapter {self.trained.name}. Embeddings stay "
                                 "valid: clicks answer at once.")
