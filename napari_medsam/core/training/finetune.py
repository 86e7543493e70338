"""Fine-tune a LoRA adapter on a training set and save it: the one call the CLI and panel use.

The new adapter is trained under a temporary name; it is written to its folder (atomically) only
when training ends well. A cancel or an error removes it and re-activates whatever adapter was
active before, so the previous adapter (in memory and on disk) is never touched.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..adapters import adapters_of
from ..domain_gate import DomainGate, reference_spread
from ..domain_gate import describe as profile_of
from ..embeddings import EmbeddingCache
from .data import TrainSet, cached_features, describe
from .loop import Progress, TrainConfig, TrainResult, train


def checkpoint_adapter_name(folder: Path) -> str | None:
    """The training adapter's name inside a checkpoint's parameter names (a resumed run must
    use it: the checkpoint is matched by parameter name), or None."""
    info = Path(folder) / "state.json"
    if not info.is_file():
        return None
    try:
        names = json.loads(info.read_text()).get("names") or []
    except (OSError, ValueError):
        return None
    found = re.search(r"\.(training-[0-9a-f]{8})\.", names[0]) if names else None
    return found.group(1) if found else None


def resume_dir(out: str | Path) -> Path:
    """Where a run's checkpoint lives until it finishes (beside the adapter folder)."""
    out = Path(out)
    return out.with_name(out.name + ".resume")


def fit_gate(model, sets: list[TrainSet], cache: EmbeddingCache) -> DomainGate:
    """The domain gate of an adapter from its training (and validation) images' embeddings."""
    images = list({im.key: im for data in sets for im in data.images}.values())  # one per image
    profiles = np.stack([profile_of(cached_features(cache, im.key)) for im in images])
    return DomainGate.fit(profiles, [im.group for im in images],
                          reference_spread(model.model_id))


def finetune(
    model,
    train_set: TrainSet,
    val_set: TrainSet,
    cache: EmbeddingCache,
    out: str | Path,
    config: TrainConfig | None = None,
    targets: str = "decoder",
    rank: int = 4,
    init_from: str | None = "active",
    metadata: dict | None = None,
    progress: Callable[[Progress], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    resume: bool = False,
    activate: bool = True,
    gate: bool = True,
) -> TrainResult:
    """Train an adapter and save it to `out` (peft files + metadata.json).

    Args:
        targets: "decoder" (default, cached embeddings) or "encoder" (also TinyViT qkv).
        init_from: "active" to start from the active adapter (e.g. the click adapter, so its
            click skills are kept), a loaded adapter's name, or None for a fresh adapter.
        metadata: extra metadata (modality, description...).
        resume: continue from the checkpoint of an earlier, interrupted run with the same `out`.
        activate: load the saved adapter into the model and make it active.
        gate: give a decoder adapter a domain gate (`core.domain_gate`) fitted on its images,
            so it is not applied to images unlike them (another modality).

    Returns:
        The training result (validation Dice before/after, steps, seconds).
    """
    config = config or TrainConfig()
    ad = adapters_of(model)
    previous = ad.active
    init = previous if init_from == "active" else init_from
    ckpt = resume_dir(out)
    name = (resume and checkpoint_adapter_name(ckpt)) or f"training-{uuid.uuid4().hex[:8]}"
    params = ad.create(name, targets, rank, init_from=init)
    if not resume:
        shutil.rmtree(ckpt, ignore_errors=True)
    try:
        result = train(model, params, train_set, val_set, cache, config, progress, cancel,
                       checkpoint_dir=ckpt, base_context=ad.disabled)
    except BaseException:
        ad.remove(name)
        ad.activate(previous)
        raise
    meta = {
        "name": Path(out).name,
        "targets": ad.metadata[name]["targets"],
        "rank": ad.metadata[name]["rank"],
        "box_prompts": config.box_prompts,
        "initialised_from": init,
        "training_set": {"objects": len(train_set), "images": len(train_set.images),
                         "groups": len(train_set.groups), "per_dataset": describe(train_set)},
        "validation_set": {"objects": len(val_set), "groups": len(val_set.groups)},
        "val_dice_before": result.val_before,
        "val_dice_after": result.val_after,
        "recipe": {**config.to_dict(), "loss": "Dice + BCE", "optimizer": "AdamW",
                   "steps_run": result.steps, "best_step": result.best_step,
                   "stopped": result.stopped, "seconds": round(result.seconds, 1)},
        "date": _dt.date.today().isoformat(),
        **(metadata or {}),
    }
    if gate and ad.metadata[name]["targets"] == "decoder":
        ad.gates[name] = fit_gate(model, [train_set, val_set], cache)
    ad.save(name, out, meta)
    ad.remove(name)
    shutil.rmtree(ckpt, ignore_errors=True)
    if activate:
        ad.load(out)
    else:
        ad.activate(previous)
    return result
