"""Dice of a head against ground truth, per structure and mode, on cached examples."""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable

import numpy as np

from ..embeddings import Embedding
from ..metrics import bbox, dice
from ..predictor import Predictor
from .data import Example
from .infer import MODES, AutoHead, resolve_modes, structure_logits
from .objects import merge_structures

BOX_MARGIN = 5  # as evaluation.evaluate_boxes


def set_example(predictor: Predictor, ex: Example) -> None:
    """Make an example's cached embedding current in the predictor (no encoder run)."""
    emb = Embedding(ex.features.float().numpy(), ex.embedding.original_size,
                    ex.embedding.input_size)
    predictor.set_embedding(emb)


def evaluate_head(
    predictor: Predictor,
    head: AutoHead,
    examples: list[Example],
    modes: tuple = ("dense",),
    box_baseline: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict]:
    """One record {"name", "case", "structure", "mode", "dice"} per example, structure and mode.

    `modes` items are a mode name ("dense", "box", "refine": that mode for all structures) or a
    list with one mode per structure (recorded as e.g. "dense,refine,dense"). Each example is
    decoded once per mode, however many combinations are scored. With `box_baseline`, also the
    model's box prompt on the ground truth's box (5-pixel margin, as `napari-medsam evaluate`):
    the upper bound the head is compared with.
    A structure absent from the ground truth is scored only when the head draws it (Dice 0).
    """
    keep = head.keep_largest
    per_structure = list(dict.fromkeys(tuple(resolve_modes(head, m)) for m in modes))
    needed = {m for ms in per_structure for m in ms}
    records = []
    for i, ex in enumerate(examples):
        set_example(predictor, ex)
        stacks, _ = structure_logits(predictor, head, needed, keep)

        def add(name: str, mode: str, pred: np.ndarray, truth: np.ndarray, ex=ex) -> None:
            if truth.any() or pred.any():
                records.append({"name": ex.name, "case": ex.case, "structure": name,
                                "mode": mode, "dice": dice(pred, truth)})

        for ms in per_structure:
            label = ms[0] if len(set(ms)) == 1 else ",".join(ms)
            logits = np.stack([stacks[m][s] for s, m in enumerate(ms)])
            labels = merge_structures(logits, head.structures, keep)
            for value, name in zip(head.structures, head.names, strict=True):
                add(name, label, labels == value, ex.truth == value)
        if box_baseline:
            for value, name in zip(head.structures, head.names, strict=True):
                truth = ex.truth == value
                if truth.any():
                    mask = predictor.predict(box=bbox(truth, BOX_MARGIN)).masks[0]
                    add(name, "box-prompt", mask, truth)
        if progress is not None:
            progress(i + 1, len(examples))
    return records


def per_slice_dice(pred: np.ndarray, truth: np.ndarray) -> list[float]:
    """2D Dice of each slice of a (Z, H, W) structure that holds it or where it was drawn: the
    rule `evaluate_head` scores a 2D example by, applied to every slice of a volume."""
    return [dice(p, t) for p, t in zip(pred, truth, strict=True) if t.any() or p.any()]


def presence_split(pred: np.ndarray, truth: np.ndarray) -> tuple[list[float], int, int]:
    """Where a (Z, H, W) structure's per-slice Dice is lost: (2D Dice of each slice that holds
    it, 0 where it was missed; slices drawn without it; slices missed). The first list is
    scored on the slices a box prompt is scored on; the counts are the head's presence errors."""
    held = [dice(p, t) for p, t in zip(pred, truth, strict=True) if t.any()]
    drawn = pred.any(axis=(1, 2))
    holds = truth.any(axis=(1, 2))
    return held, int((drawn & ~holds).sum()), int((holds & ~drawn).sum())


def all_mode_combinations(n_structures: int) -> list[list[str]]:
    """Every assignment of a mode to each structure (27 for three structures)."""
    return [list(c) for c in itertools.product(MODES, repeat=n_structures)]


def best_mode(records: list[dict]) -> tuple[str, float]:
    """The evaluated mode (or "m1,m2,..." combination) with the best mean Dice over structures."""
    scores = {mode: float(np.mean(list(per.values())))
              for mode, per in mean_dice(records).items() if mode != "box-prompt"}
    # ties go to the plainer choice: "dense" first, then single modes, then combinations
    best = max(scores, key=lambda m: (round(scores[m], 4), m == "dense", "," not in m))
    return best, scores[best]


def mean_dice(records: list[dict]) -> dict[str, dict[str, float]]:
    """{mode: {structure: mean Dice}} of evaluation records."""
    groups: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in records:
        groups[(r["mode"], r["structure"])].append(r["dice"])
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for (mode, structure), values in sorted(groups.items()):
        out[mode][structure] = round(float(np.mean(values)), 4)
    return dict(out)
