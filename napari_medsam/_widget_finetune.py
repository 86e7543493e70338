"""Fine-tune box of the dock widget: corrections are saved on Accept; one button trains on them.

Every accepted object is written at once to the corrections folder (core/corrections.py), so
nothing is lost on a crash and the folder doubles as training data. "Fine-tune" trains a LoRA
adapter on it in the background (progress bar, live validation Dice, Cancel); "Use this
adapter" then switches the model to it. A decoder adapter keeps every embedding valid.
"""

from __future__ import annotations

import re
from pathlib import Path

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QVBoxLayout,
)

from ._finetune_job import FinetuneRequest, finetune_job
from ._widget_ui import _button, wait_while
from .core.errors import CancelledError, InputError, MedSAMError

MODALITIES = ("any", "ct", "mri", "ultrasound", "dermoscopy", "endoscopy", "x-ray")


class FinetuneTools:
    """Corrections folder, count, Fine-tune / Cancel, progress and "Use this adapter"."""

    def __init__(self, widget):
        self.w = widget
        self.worker = None
        self.request: FinetuneRequest | None = None
        self.trained: Path | None = None  # the adapter the last run saved
        self.history: list[dict] = []  # validation Dice after each check of the last run
        self.last_error: str | None = None

    # ---- layout --------------------------------------------------------------------------
    def build(self, root) -> None:
        from .core.corrections import default_project_dir

        group = QGroupBox("Fine-tune on your corrections")
        box = QVBoxLayout(group)
        self.save_check = QCheckBox("Save accepted objects as corrections")
        self.save_check.setChecked(True)
        self.save_check.setToolTip("Each accepted object (image, mask, prompts) is written at "
                                   "once to the corrections folder: training data for "
                                   "Fine-tune.")
        self.save_check.toggled.connect(lambda _: self.bind_all())
        box.addWidget(self.save_check)
        self.folder = Path(default_project_dir())
        self.count_label = QLabel()
        self.count_label.setWordWrap(True)
        row = QHBoxLayout()
        row.addWidget(self.count_label, 1)
        row.addWidget(_button("Folder…", self._pick_folder, "Choose the corrections folder "
                              "(one per annotation project)."))
        box.addLayout(row)
        row = QHBoxLayout()
        self.name_edit = QLineEdit("my-adapter")
        self.name_edit.setToolTip("Name of the adapter to save (letters, digits, - and _).")
        self.modality_combo = QComboBox()
        self.modality_combo.setEditable(True)
        self.modality_combo.addItems(MODALITIES)
        self.modality_combo.setToolTip("Modality the adapter is for: adapters are kept per "
                                       "modality and offered under 'Adapter'.")
        self.modality_combo.currentTextChanged.connect(lambda _: self.bind_all())
        row.addWidget(QLabel("Name"))
        row.addWidget(self.name_edit, 1)
        row.addWidget(self.modality_combo)
        box.addLayout(row)
        self.train_button = _button("Fine-tune", self.start, "Train a small LoRA adapter on the "
                                    "saved corrections in the background (a few minutes).")
        self.cancel_button = _button("Cancel", self.cancel, "Stop training; the adapter in use "
                                     "stays as it is.")
        self.cancel_button.setEnabled(False)
        self.use_button = _button("Use this adapter", self.use, "Switch the model to the "
                                  "adapter just trained.")
        self.use_button.setEnabled(False)
        row = QHBoxLayout()
        for button in (self.train_button, self.cancel_button, self.use_button):
            row.addWidget(button)
        box.addLayout(row)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        box.addWidget(self.progress)
        self.status = QLabel("Accept objects, then press Fine-tune.")
        self.status.setWordWrap(True)
        box.addWidget(self.status)
        root.addWidget(group)
        self.group = group
        self.refresh()

    # ---- corrections -----------------------------------------------------------------------
    def store(self):
        from .core.corrections import CorrectionStore

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
        for ann in self.w.annotations.values():
            self.bind(ann)
        self.refresh()

    def set_folder(self, folder: str | Path) -> None:
        """Save corrections to (and train on) `folder` from now on."""
        self.folder = Path(folder)
        self.bind_all()

    def _pick_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self.w, "Corrections folder", str(self.folder))
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
        return self.worker is not None

    def _out(self) -> Path:
        from .core.adapters import registry_path

        name = self.name_edit.text().strip()
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise InputError(f"'{name}' cannot be an adapter name: use letters, digits, '-' "
                             "and '_'.")
        return registry_path(name, self.modality())

    def start(self, steps: int = 80, minutes: float | None = None) -> None:
        """Train in the background on the saved corrections (several hundred objects run
        `steps` optimizer steps of 4 objects; ~3 minutes on 2 CPU cores)."""
        self.w._guard(self._start, steps, minutes)

    def _start(self, steps: int, minutes: float | None) -> None:
        from napari.qt.threading import create_worker

        if self.worker is not None:
            raise InputError("Fine-tuning is running already: wait or press Cancel.")
        if self.count() == 0:
            raise InputError(f"No corrections are saved in {self.folder} yet: accept objects "
                             "first (with 'Save accepted objects as corrections' ticked).")
        out = self._out()
        self.request = FinetuneRequest(self.w.engine, self.w.spec(), self.folder, out,
                                       self.modality(), steps, minutes)
        self.history, self.trained, self.last_error = [], None, None
        worker = create_worker(finetune_job, self.request, _start_thread=False,
                               _ignore_errors=True)
        worker.yielded.connect(self._on_message)
        worker.finished.connect(lambda: self._on_finished(worker))
        self.worker = worker
        self.train_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.use_button.setEnabled(False)
        self.progress.setRange(0, 0)
        self.status.setText("Starting…")
        worker.start()

    def _on_message(self, msg: tuple) -> None:
        kind = msg[0]
        if kind == "status":
            self.status.setText(msg[1])
        elif kind == "start":
            n_train, n_val, steps = msg[1:]
            self.progress.setRange(0, steps)
            self.progress.setValue(0)
            self.status.setText(f"Training on {n_train} objects, validating on {n_val}…")
        elif kind == "progress":
            p = msg[1]
            self.progress.setValue(p.step)
            if p.val:
                self.history.append({"step": p.step, **p.val})
                dice = ", ".join(f"{k} {v:.3f}" for k, v in p.val.items())
                self.status.setText(f"Step {p.step}/{p.steps}. Validation Dice: {dice}")
        elif kind == "done":
            result, out = msg[1:]
            self.trained = Path(out)
            before = result.val_before
            after = result.val_after
            change = ", ".join(f"{k} {before[k]:.3f} → {after.get(k, float('nan')):.3f}"
                               for k in before)
            self.status.setText(f"Saved {out.name} ({result.steps} steps, "
                                f"{result.seconds / 60:.1f} min). Validation Dice: {change}.")
            self.use_button.setEnabled(True)
        elif kind == "error":
            exc = msg[1]
            if isinstance(exc, CancelledError):
                text = "Fine-tuning cancelled; the adapter in use is unchanged."
                self.w.notify("info", text)
            else:
                text = str(exc) if isinstance(exc, MedSAMError) else (
                    f"Fine-tuning failed ({type(exc).__name__}: {exc}). Your corrections and "
                    "the adapter in use are unchanged.")
                self.w.notify("error", text)
            self.last_error = text
            self.status.setText(text)

    def cancel(self) -> None:
        if self.request is not None and self.worker is not None:
            self.status.setText("Stopping after the current step…")
            self.request.stop.set()

    def _on_finished(self, worker) -> None:
        if worker is not self.worker:
            return
        self.worker = None
        self.train_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if self.progress.maximum() == 0:
            self.progress.setRange(0, 1)
        self.refresh()

    def wait(self, timeout_s: float = 600.0) -> None:
        """Block (processing Qt events) until training ends; for scripts and tests."""
        wait_while(lambda: self.worker is not None, timeout_s, "fine-tuning")

    def use(self) -> None:
        """Switch the model to the adapter the last run saved."""
        if self.trained is None:
            self.w.notify("warning", "No adapter was trained in this session yet.")
            return
        self.w.options.add_adapter(str(self.trained), f"{self.modality()}/{self.trained.name}")
        self.w.notify("info", f"Now using the adapter {self.trained.name}. Embeddings stay "
                              "valid: clicks answer at once.")
