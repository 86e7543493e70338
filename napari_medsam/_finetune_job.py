"""What the Fine-tune panel runs off the UI thread: train an adapter on the saved corrections.

No Qt here. A separate copy of the model is trained, so the model the user clicks with on the
UI thread is never touched while training runs; the panel loads the saved adapter into it only
when the user presses "Use this adapter". Embeddings come from the widget's shared cache (it
is thread-safe), so corrected images are not encoded again.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ._widget_engine import Engine, ModelSpec, _active_adapter, _set_adapter
from .core.errors import InputError

MIN_OBJECTS = 4  # fewer corrections cannot be split into training and validation objects


@dataclass
class FinetuneRequest:
    """One fine-tuning run: the model setting, the corrections folder and the adapter to write."""

    engine: Engine
    spec: ModelSpec
    project: Path
    out: Path
    modality: str = "any"
    steps: int = 80
    minutes: float | None = None
    stop: threading.Event = field(default_factory=threading.Event)


def _train(req: FinetuneRequest, put) -> None:
    """The blocking part (runs in its own thread); reports through `put(message)`."""
    from .core.corrections import CorrectionStore, to_train_set
    from .core.model import load_model
    from .core.predictor import Predictor
    from .core.training import TrainConfig, finetune, split_by_group
    from .core.training.loop import bf16_is_fast

    put(("status", "Loading a training copy of the model…"))
    spec = req.spec
    model = load_model(spec.name, device=spec.device, model_type=spec.model_type)
    _set_adapter(model, spec.adapter, _active_adapter(model))
    predictor = Predictor(model, req.engine.cache)
    store = CorrectionStore(req.project)
    put(("status", f"Reading {len(store)} corrections (images not in the cache are embedded "
                   "again)…"))
    data = to_train_set(store, predictor)
    if len(data) < MIN_OBJECTS:
        raise InputError(f"Fine-tuning needs at least {MIN_OBJECTS} accepted objects; "
                         f"{len(data)} are saved in {req.project}. Accept more objects first.")
    train_set, val_set = split_by_group(data, 0.25)
    device = str(model.device)
    config = TrainConfig(steps=req.steps, minutes=req.minutes, batch_size=4, lr=1e-3,
                         val_every=max(5, req.steps // 8), device=device,
                         bf16=bf16_is_fast(device))
    put(("start", len(train_set), len(val_set), req.steps))
    result = finetune(model, train_set, val_set, req.engine.cache, req.out, config,
                      init_from="active", activate=False,
                      metadata={"modality": req.modality, "trained_on": str(req.project)},
                      progress=lambda p: put(("progress", p)), cancel=req.stop.is_set)
    put(("done", result, req.out))


def finetune_job(req: FinetuneRequest) -> Iterator[tuple]:
    """Train; yields ("status", text), ("start", n_train, n_val, steps), ("progress",
    Progress), then ("done", TrainResult, folder) or ("error", exception). Setting
    `req.stop` (Cancel) ends the run after the current step; the previous adapter stays."""
    messages: queue.Queue = queue.Queue()

    def run() -> None:
        try:
            _train(req, messages.put)
        except BaseException as exc:  # shown to the user in plain words by the panel
            messages.put(("error", exc))
        finally:
            messages.put(None)

    thread = threading.Thread(target=run, name="napari-medsam-finetune", daemon=True)
    thread.start()
    try:
        while True:
            try:
                msg = messages.get(timeout=0.25)
            except queue.Empty:
                yield ("tick",)  # lets the worker notice a quit between training steps
                continue
            if msg is None:
                return
            yield msg
    finally:
        req.stop.set()  # the worker quit (or the panel closed): stop training too
