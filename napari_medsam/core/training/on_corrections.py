"""Fine-tune on a corrections folder: the one routine the napari dock and the Slicer module run.

    result, folder = finetune_on_corrections(spec, cache, project, out, modality="ct")

A training copy of the model is loaded (`runtime.load_torch`), so the model the user clicks with
is never touched while training runs; the caller switches to the saved adapter only when the
user asks ("Use this adapter"). A cancel or an error leaves no adapter folder behind.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..embeddings import EmbeddingCache
from ..errors import InputError
from .loop import Progress, TrainResult

MIN_OBJECTS = 4  # fewer corrections cannot be split into training and validation objects


def finetune_on_corrections(
    spec,
    cache: EmbeddingCache,
    project: str | Path,
    out: str | Path,
    modality: str = "any",
    steps: int = 80,
    minutes: float | None = None,
    progress: Callable[[Progress], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    status: Callable[[str], None] | None = None,
    started: Callable[[int, int, int], None] | None = None,
) -> tuple[TrainResult, Path]:
    """Train a LoRA adapter on the corrections saved in `project` and save it to `out`.

    Starts from the adapter `spec` makes active (the click adapter by default), holds a quarter
    of the sources (patients / images) back for validation and keeps the best validated state.

    Args:
        spec: a `runtime.RuntimeSpec`: model, adapter to start from, device (None: cuda when
            torch sees a GPU).
        cache: the front end's embedding cache (thread-safe): corrected images are not encoded
            again when their embedding is there.
        project: the annotation project folder (`corrections.CorrectionStore`).
        out: the adapter folder to write (e.g. `adapters.registry_path(name, modality)`).
        modality: recorded in the adapter's metadata.
        steps / minutes: optimizer steps of 4 objects at most; wall-clock budget.
        progress: called after each step (`Progress.val` holds validation Dice after a check).
        cancel: polled between steps; when it turns true, `CancelledError` is raised and
            nothing is written.
        status: sentences for a status line.
        started: called once with (training objects, validation objects, steps).

    Returns:
        (TrainResult, adapter folder). Raises InputError with fewer than `MIN_OBJECTS` objects.
    """
    from ..corrections import CorrectionStore, is_store, to_train_set
    from ..predictor import Predictor
    from ..runtime import load_torch
    from . import TrainConfig, finetune, split_by_group
    from .loop import bf16_is_fast

    say = status or (lambda text: None)
    project, out = Path(project), Path(out)
    if not is_store(project):
        raise InputError(f"{project} holds no corrections yet: accept objects first.")
    say("Loading a training copy of the model…")
    model = load_torch(spec)
    predictor = Predictor(model, cache)
    store = CorrectionStore(project)
    say(f"Reading {len(store)} corrections (images not in the cache are embedded again)…")
    data = to_train_set(store, predictor)
    if len(data) < MIN_OBJECTS:
        raise InputError(f"Fine-tuning needs at least {MIN_OBJECTS} accepted objects; "
                         f"{len(data)} are saved in {project}. Accept more objects first.")
    train_set, val_set = split_by_group(data, 0.25)
    device = str(model.device)
    config = TrainConfig(steps=steps, minutes=minutes, batch_size=4, lr=1e-3,
                         val_every=max(5, steps // 8), device=device,
                         bf16=bf16_is_fast(device))
    if started is not None:
        started(len(train_set), len(val_set), steps)
    result = finetune(model, train_set, val_set, cache, out, config, init_from="active",
                      activate=False,
                      metadata={"modality": modality, "trained_on": str(project)},
                      progress=progress, cancel=cancel)
    return result, out
