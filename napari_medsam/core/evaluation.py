"""Evaluation on a manifest of image/mask pairs (like ../shared/data/manifest.json).

Targets are every label of every 2D image and of every volume slice that contains it; each gives
one record {"dataset", "case", "label", "slice", "prompt", "dice"} so runs can be compared.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import CancelledError, InputError
from .intensity import Preset, suggest_preset
from .metrics import bbox, dice
from .predictor import Predictor
from .volume import open_image

BOX_MARGIN = 5


@dataclass
class Target:
    """One object to segment: a 2D image (or slice) and its ground-truth mask."""

    dataset: str
    case: str
    label: int
    slice: int | None
    image: np.ndarray
    truth: np.ndarray
    preset: Preset
    bounds: tuple[float, float] | None


def load_manifest(data_dir: str | Path) -> list[dict]:
    path = Path(data_dir) / "manifest.json"
    if not path.is_file():
        raise InputError(f"No manifest.json in {data_dir}: point eval at a folder that has one.")
    return json.loads(path.read_text())["pairs"]


def select_pairs(
    pairs: list[dict], datasets: list[str] | None = None, max_cases: int | None = None
) -> list[dict]:
    """The manifest pairs an evaluation covers: only `datasets` (default all), at most
    `max_cases` per dataset, in manifest order (`eval` and `batch` select alike)."""
    seen: dict[str, int] = defaultdict(int)
    chosen = []
    for pair in pairs:
        name = pair["dataset"]
        if datasets and name not in datasets:
            continue
        if max_cases is not None and seen[name] >= max_cases:
            continue
        seen[name] += 1
        chosen.append(pair)
    return chosen


def iter_targets(
    data_dir: str | Path,
    datasets: list[str] | None = None,
    max_cases: int | None = None,
    max_slices: int | None = None,
) -> Iterator[Target]:
    """Yield every (image or slice, label) target of the manifest, grouped by image/slice.

    Args:
        datasets: only these dataset names (default: all).
        max_cases: at most this many cases per dataset.
        max_slices: for volumes, at most this many slices per label, evenly spread.
    """
    for pair in select_pairs(load_manifest(data_dir), datasets, max_cases):
        yield from pair_targets(data_dir, pair, max_slices)


def pair_targets(data_dir: str | Path, pair: dict, max_slices: int | None = None
                 ) -> Iterator[Target]:
    """The targets of one manifest pair (every label of the image, or of each volume slice
    holding it; `max_slices` per label at most, evenly spread)."""
    data_dir = Path(data_dir)
    name = pair["dataset"]
    img = open_image(data_dir / pair["image"])  # volumes as axial slices, like every verb
    gt = img.labels_from_file(data_dir / pair["mask"])
    preset = suggest_preset(img.data, pair.get("modality", ""))
    if not img.is_volume:
        for label in np.unique(gt)[1:]:
            yield Target(name, pair["case"], int(label), None, img.data, gt == label, preset, None)
        return
    bounds = preset.bounds(img.data)
    per_slice: dict[int, list[int]] = defaultdict(list)
    for label in np.unique(gt)[1:]:
        zs = np.nonzero((gt == label).any(axis=(1, 2)))[0]
        if max_slices is not None and len(zs) > max_slices:
            zs = zs[np.linspace(0, len(zs) - 1, max_slices).round().astype(int)]
        for z in zs:
            per_slice[int(z)].append(int(label))
    for z in sorted(per_slice):
        for label in per_slice[z]:
            yield Target(name, pair["case"], label, z, img.data[z], gt[z] == label, preset, bounds)


def evaluate_boxes(
    predictor: Predictor,
    targets: Iterator[Target],
    progress: Callable[[int, Target], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> list[dict]:
    """Box-prompt Dice (tight box grown by BOX_MARGIN pixels, clipped) for each target."""
    records = []
    for i, t in enumerate(targets):
        if cancel is not None and cancel():
            raise CancelledError(f"Evaluation cancelled after {i} targets.")
        predictor.set_image(t.image, t.preset, t.bounds)
        pred = predictor.predict(box=bbox(t.truth, BOX_MARGIN))
        records.append(record(t, "box", dice(pred.masks[0], t.truth)))
        if progress is not None:
            progress(i + 1, t)
    return records


def record(t: Target, prompt: str, value: float, **extra) -> dict:
    return {
        "dataset": t.dataset,
        "case": t.case,
        "label": t.label,
        "slice": t.slice,
        "prompt": prompt,
        "dice": round(float(value), 5),
        **extra,
    }


def summarize(records: list[dict], key: str = "dice") -> dict[tuple[str, int, str], dict]:
    """Mean and count of `key` per (dataset, label, prompt)."""
    groups: dict[tuple[str, int, str], list[float]] = defaultdict(list)
    for r in records:
        groups[(r["dataset"], r["label"], r["prompt"])].append(r[key])
    return {k: {"mean": float(np.mean(v)), "n": len(v)} for k, v in sorted(groups.items())}


def format_summary(records: list[dict]) -> str:
    lines = [f"{'dataset':<20}{'label':>6}  {'prompt':<8}{'n':>6}{'mean Dice':>11}"]
    for (ds, label, prompt), s in summarize(records).items():
        lines.append(f"{ds:<20}{label:>6}  {prompt:<8}{s['n']:>6}{s['mean']:>11.4f}")
    return "\n".join(lines)
