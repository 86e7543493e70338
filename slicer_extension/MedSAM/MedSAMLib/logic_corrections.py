"""The Logic's corrections and fine-tuning: accepted objects -> corrections store -> an adapter.

Mixed into `MedSAMLogic` (kept apart only to keep files small). Every object accepted with
MedSAM (`applyPreview`, `segmentBox`, or the Segment Editor effect when an object is finished)
is saved at once to the same corrections store the napari widget writes
(`napari_medsam.core.corrections`): the slice image in the core's slice frame (what training
sees), the embedding key, the mask in that frame, the prompts, the source (the volume's file or
node name), the modality and the core's slice index. `saveSegmentAsCorrections` adds a segment
finished by hand (every slice of it). `startFinetune` trains an adapter on the store in the
background with the core's `finetune_on_corrections` (the napari dock's routine); the adapter
in use is not touched until `useTrainedAdapter`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import nodes
from .jobs import BackgroundJob


class FinetuneBusyError(RuntimeError):
    """A fine-tuning run is going on already."""


@dataclass
class FinetuneState:
    """What a fine-tuning run reports, for a panel to poll (written by the training thread)."""

    name: str
    modality: str
    steps: int
    text: str = "Starting…"
    n_train: int = 0
    n_val: int = 0
    history: list[dict] = field(default_factory=list)  # {"step", "box", "click1", ...}
    result: object = None  # the core's TrainResult once saved
    folder: Path | None = None

    def started(self, n_train: int, n_val: int, steps: int) -> None:
        self.n_train, self.n_val, self.steps = n_train, n_val, steps
        self.text = f"Training on {n_train} objects, validating on {n_val}…"

    def checked(self, progress) -> None:
        """After each step; records the validation Dice when the step validated."""
        if progress.val:
            self.history.append({"step": progress.step, **progress.val})
            dice = ", ".join(f"{k} {v:.3f}" for k, v in progress.val.items())
            self.text = f"Step {progress.step}/{progress.steps}. Validation Dice: {dice}"

    @property
    def dice(self) -> dict:
        """The latest validation Dice (box, click1..click5), empty before the first check."""
        return {k: v for k, v in self.history[-1].items() if k != "step"} if self.history else {}


def source_name(volume_node) -> str:
    """What a correction records as its source: the volume's file, else the node's name."""
    storage = volume_node.GetStorageNode()
    name = storage.GetFileName() if storage is not None else None
    return name or volume_node.GetName()


def segment_label(segmentation_node, segment_id: str | None) -> int:
    """The segment's position + 1 in its segmentation (1 without one): the record's label."""
    if segmentation_node is None or not segment_id:
        return 1
    return max(int(segmentation_node.GetSegmentation().GetSegmentIndex(segment_id)), 0) + 1


class CorrectionsWork:
    """Corrections capture and fine-tuning for `MedSAMLogic` (needs its `_entry`, `_cache`,
    `getPredictor`, `resetPrompts`, `loadAdapter`, `device` and `adapterPath`)."""

    saveCorrections: bool = True  # accepted objects are saved (the panel's check box)
    correctionsFolder: str | None = None  # None: the core's default project folder
    modality: str = "any"  # recorded with each correction and given to the adapter
    finetuneJob: BackgroundJob | None = None
    finetuneState: FinetuneState | None = None
    trainedAdapter: Path | None = None  # the adapter the last finished run saved

    # ---- the corrections store ---------------------------------------------------------------
    def correctionsStore(self):
        """The corrections store of the project folder (made on first use)."""
        from napari_medsam.core.corrections import CorrectionStore, default_project_dir

        return CorrectionStore(self.correctionsFolder or default_project_dir())

    def setCorrectionsFolder(self, folder: str | Path | None) -> None:
        """Save corrections to (and fine-tune on) `folder` from now on (None: the default)."""
        self.correctionsFolder = str(Path(folder).expanduser()) if folder else None

    def correctionsPath(self) -> Path:
        from napari_medsam.core.corrections import default_project_dir

        return Path(self.correctionsFolder or default_project_dir())

    def correctionsCount(self) -> int:
        """How many corrections the project folder holds (0 when it does not exist yet)."""
        from napari_medsam.core.corrections import is_store

        folder = self.correctionsPath()
        return len(self.correctionsStore()) if is_store(folder) else 0

    def _session_for_record(self, volumeNode, axis: int):
        entry = self._entry(volumeNode, axis)
        entry.session.source = source_name(volumeNode)
        entry.session.modality = self.modality or "any"
        return entry

    def acceptObject(self, volumeNode, axis: int = 0, segmentationNode=None,
                     segmentId: str | None = None, index: int | None = None) -> str | None:
        """The object being drawn is finished: save its mask as a correction (when
        `saveCorrections` is on) and clear the prompts.

        Args:
            index: the array slice the caller drew the object on (the effect passes it); when
                the session has moved to another slice since, nothing is saved or cleared.

        Returns:
            The correction's id, or None when nothing was saved.
        """
        from napari_medsam.core.corrections import record_commit

        entry = self._session_for_record(volumeNode, axis)
        session = entry.session
        mask, prompts, z = session.preview, session.state, session.current_slice
        if index is not None and entry.frame.core_index(index) != z:
            return None  # the session holds another object now: not this caller's to finish
        cid = None
        if self.saveCorrections and mask is not None and np.asarray(mask).any():
            label = segment_label(segmentationNode, segmentId)
            cid = record_commit(self.correctionsStore(), session, mask, label, z, prompts)
        session.reset_prompts()
        return cid

    def saveSegmentAsCorrections(self, volumeNode, segmentationNode, segmentId: str,
                                 axis: int = 0) -> int:
        """Save a segment finished by hand (or with other effects) as corrections: one per
        slice along `axis` that holds it. Returns how many were saved."""
        from napari_medsam.core.corrections import record_commit

        entry = self._session_for_record(volumeNode, axis)
        kji = nodes.segment_array(segmentationNode, segmentId, volumeNode) > 0
        stack = entry.frame.stack(kji)
        filled = np.nonzero(stack.any(axis=(1, 2)))[0]
        if not len(filled):
            raise nodes.NodeError("The segment is empty: nothing to save as corrections.")
        store, label = self.correctionsStore(), segment_label(segmentationNode, segmentId)
        for z in filled:
            record_commit(store, entry.session, stack[z], label, int(z))
        return len(filled)

    # ---- fine-tuning -------------------------------------------------------------------------
    def startFinetune(self, name: str, modality: str | None = None, steps: int = 80,
                      minutes: float | None = None) -> BackgroundJob:
        """Train an adapter called `name` on the project's corrections, in the background.

        The adapter goes to the registry (`<registry>/<modality>/<name>`); training starts from
        the adapter in use (the click adapter by default) on a copy of the model, on the GPU
        when torch sees one. Progress with the validation Dice is in `finetuneState`; a cancel
        (`finetuneJob.cancel()`) writes nothing and keeps the adapter in use.
        """
        from napari_medsam.core.adapter_registry import new_adapter_path
        from napari_medsam.core.errors import InputError
        from napari_medsam.core.training.on_corrections import finetune_on_corrections

        from . import features

        if self.finetuneJob is not None and self.finetuneJob.running:
            raise FinetuneBusyError("Fine-tuning is running already: wait or cancel it.")
        modality = (modality or self.modality or "any").strip().lower()
        out = new_adapter_path(name, modality)
        project = self.correctionsPath()
        if self.correctionsCount() == 0:
            raise InputError(f"No corrections are saved in {project} yet: accept objects "
                             "with MedSAM first, or save a finished segment as corrections.")
        if self._cache is None:
            self.getPredictor()  # the shared embedding cache: corrected slices are not re-encoded
        runtime = features.runtime()
        spec = runtime.RuntimeSpec(device=self.device, adapter=self.adapterPath)
        cache = self._cache
        state = FinetuneState(out.name, modality, steps)
        self.finetuneState, self.trainedAdapter = state, None

        def work(progress, cancelled):
            def step(p) -> None:
                progress(p.step, p.steps)
                state.checked(p)

            def say(text: str) -> None:
                state.text = text

            return finetune_on_corrections(spec, cache, project, out, modality, steps, minutes,
                                           progress=step, cancel=cancelled, status=say,
                                           started=state.started)

        def finish(outcome) -> FinetuneState:
            result, folder = outcome
            state.result, state.folder = result, Path(folder)
            self.trainedAdapter = Path(folder)
            change = ", ".join(f"{k} {v:.3f} -> {result.val_after.get(k, float('nan')):.3f}"
                               for k, v in result.val_before.items())
            state.text = (f"Saved {modality}/{state.name} ({result.steps} steps, "
                          f"{result.seconds / 60:.1f} min). Validation Dice: {change}.")
            return state

        self.finetuneJob = BackgroundJob(work, finish, name="Fine-tuning")
        return self.finetuneJob

    def finetune(self, name: str, modality: str | None = None, steps: int = 80,
                 minutes: float | None = None) -> FinetuneState:
        """Blocking form of `startFinetune` (batch scripts)."""
        return self.startFinetune(name, modality, steps, minutes).wait()

    def useTrainedAdapter(self) -> str:
        """Switch to the adapter the last run saved; returns a sentence for the status line."""
        if self.trainedAdapter is None:
            raise nodes.NodeError("No adapter was trained in this session yet: press Fine-tune.")
        folder = self.trainedAdapter
        self.loadAdapter(str(folder))
        return (f"Using adapter {folder.parent.name}/{folder.name} (kept in the adapter "
                "registry; pick it under Advanced > Adapter later).")
