"""Folder in, head folder out: pick images, train, validate on other patients, pick the mode, save.

Used by `napari-medsam train-head` and `scripts/train_heads.py`, so the shipped heads are made
exactly the way a user makes their own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from ..errors import InputError
from ..predictor import Predictor
from .data import list_pairs, load_examples, pick_pairs
from .evaluate import all_mode_combinations, best_mode, evaluate_head, mean_dice
from .infer import MODES, AutoHead
from .torch_run import save_head
from .train import HeadTrainConfig, config_dict, train_head

log = logging.getLogger(__name__)


def parse_labels(specs: list[str]) -> tuple[list[int], list[str]]:
    """["1:LV", "2:myocardium"] (or "1=LV", or just "1") -> ([1, 2], ["LV", "myocardium"])."""
    values, names = [], []
    for spec in specs:
        value, _, name = spec.replace("=", ":").partition(":")
        try:
            v = int(value)
        except ValueError as exc:
            raise InputError(f"Label '{spec}' must be VALUE or VALUE:NAME, e.g. 1:LV.") from exc
        if not 0 < v < 65536 or v in values:
            raise InputError(f"Label value {v} must be 1..65535 and given once.")
        values.append(v)
        names.append(name.strip() or f"label {v}")
    if not values:
        raise InputError("Give the structures to learn with --labels, e.g. 1:LV 2:myocardium.")
    return values, names


def fit_head(
    predictor: Predictor,
    train: str | Path | list[dict],
    structures: list[int],
    names: list[str],
    config: HeadTrainConfig,
    out: str | Path | None = None,
    dataset: str | None = None,
    max_images: int | None = None,
    val: str | Path | list[dict] | None = None,
    modes: tuple[str, ...] = MODES,
    keep_largest: bool = True,
    progress: Callable[[str], None] | None = None,
) -> tuple[AutoHead, dict]:
    """Train a head on `train` (a folder or a list of pairs), validate on `val`, save to `out`.

    `val` is a folder of other patients or a list of pairs (e.g. held-out patients of the training
    folder, so the mode is chosen without touching the reporting set).

    The mode written into the metadata ("dense", "box" or "refine") is the one with the best
    mean validation Dice; without a validation folder it is "dense".

    Returns:
        The head and its metadata (also in `out/metadata.json`).
    """
    say = progress or (lambda msg: log.info(msg))
    pool = list_pairs(train, dataset) if isinstance(train, (str, Path)) else list(train)
    pairs = pick_pairs(pool, max_images, seed=config.seed)
    say(f"embedding {len(pairs)} training images (cached ones are instant)")
    examples = load_examples(predictor, pairs, structures)
    say(f"training a {config.kind} head on {len(examples)} images")
    result = train_head(predictor.model, examples, config,
                        progress=lambda ph, s, n, loss: say(f"{ph} step {s}/{n} loss {loss:.4f}")
                        if s % 50 == 0 or s == n else None)
    metadata = {
        "structures": structures,
        "names": names,
        "dataset": dataset or pairs[0].get("dataset", ""),
        "training_images": len(examples),
        "training_cases": len({p.get("case", p["image"]) for p in pairs}),
        "training_seconds": round(result.seconds, 1),
        "training_cpu_seconds": round(result.cpu_seconds, 1),
        "train_config": config_dict(config),
        "keep_largest": keep_largest,
        "mode": "dense",
        "validation": None,
    }
    head = AutoHead(metadata, module=result.head)
    if val is not None:
        val_pairs = list_pairs(val, dataset) if isinstance(val, (str, Path)) else list(val)
        overlap = {p.get("case") for p in val_pairs} & {p.get("case") for p in pairs}
        if isinstance(val, list) and overlap - {None, ""}:
            raise InputError(f"Validation shares patients with training: {sorted(overlap)[:5]}.")
        examples_val = load_examples(predictor, val_pairs, structures)
        say(f"validating on {len(examples_val)} images of other patients")
        combos = all_mode_combinations(len(structures)) if len(structures) <= 3 else []
        records = evaluate_head(predictor, head, examples_val, tuple(modes) + tuple(combos))
        best, _ = best_mode(records)
        dice = mean_dice(records)
        per = dict(zip(names, best.split(","), strict=True)) if "," in best else best
        metadata["mode"] = per
        dice = {m: d for m, d in dice.items() if m in (*modes, best)}
        where = str(val) if isinstance(val, (str, Path)) else "held-out training patients"
        metadata["validation"] = {"data": where, "images": len(examples_val), "dice": dice}
        say(f"validation Dice {dice}; mode '{best}'")
    if out is not None:
        save_head(out, result.head, predictor.model, metadata)
        say(f"saved {out}")
    return head, metadata
