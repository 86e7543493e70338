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


PAIR_KEYS = ("dataset", "case", "image", "mask")


def load_manifest(data_dir: str | Path) -> list[dict]:
    """The image/mask pairs of `data_dir/manifest.json`, checked: valid JSON, a non-empty
    "pairs" list, each pair with dataset, case, image and mask."""
    data_dir = Path(data_dir)
    path = data_dir / "manifest.json"
    if not data_dir.is_dir():
        raise InputError(f"{data_dir} is not a folder: give a folder that has a manifest.json.")
    if not path.is_file():
        raise InputError(f"No manifest.json in {data_dir}: give a folder that has one (a list "
                         "of image/mask pairs).")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{path} is not valid JSON ({exc}). Fix or rewrite it.") from None
    pairs = manifest.get("pairs") if isinstance(manifest, dict) else None
    if not isinstance(pairs, list):
        raise InputError(f'{path} has no "pairs" list: it should look like {{"pairs": '
                         '[{"dataset": ..., "case": ..., "image": ..., "mask": ...}, ...]}.')
    if not pairs:
        raise InputError(f"{path} lists no image/mask pairs: there is nothing to use.")
    for i, pair in enumerate(pairs):
        missing = [k for k in PAIR_KEYS if not isinstance(pair, dict) or k not in pair]
        if missing:
            raise InputError(f"Pair {i + 1} of {path} lacks {', '.join(missing)}.")
    return pairs


def select_pairs(
    data_dir: str | Path,
    datasets: list[str] | None = None,
    max_cases: int | None = None,
) -> list[dict]:
    """The pairs to use, checked before any work: known dataset names, files that exist.

    Args:
        datasets: only these dataset names (default: all); an unknown name is an error.
        max_cases: at most this many cases (pairs) per dataset.
    """
    data_dir = Path(data_dir)
    pairs = load_manifest(data_dir)
    known = sorted({str(p["dataset"]) for p in pairs})
    unknown = [d for d in datasets or [] if d not in known]
    if unknown:
        raise InputError(f"Unknown dataset(s) {', '.join(unknown)} in {data_dir}: it has "
                         f"{', '.join(known)}.")
    chosen = filter_pairs(pairs, datasets, max_cases)
    missing = [f for p in chosen for f in (p["image"], p["mask"]) if not (data_dir / f).exists()]
    if missing:
        raise InputError(f"{len(missing)} file(s) named in {data_dir / 'manifest.json'} do not "
                         f"exist, e.g. {data_dir / missing[0]}.")
    return chosen


def load_pair(data_dir: str | Path, pair: dict):
    """(image as every verb slices it, its mask in the same layout); a mask of another shape
    is a clear error."""
    data_dir = Path(data_dir)
    img = open_image(data_dir / pair["image"])  # volumes as axial slices, like every verb
    gt = img.labels_from_file(data_dir / pair["mask"])
    expected = tuple(img.data.shape[:3] if img.is_volume else img.data.shape[:2])
    if tuple(gt.shape) != expected:
        raise InputError(f"The mask {pair['mask']} is {tuple(gt.shape)} but its image "
                         f"{pair['image']} is {expected}: they must have the same size.")
    return img, gt


def _label_slices(gt: np.ndarray, is_volume: bool, max_slices: int | None) -> dict:
    """{slice (None for 2D): [labels]} of the targets of one mask."""
    if not is_volume:
        return {None: [int(v) for v in np.unique(gt)[1:]]}
    per_slice: dict[int, list[int]] = defaultdict(list)
    for label in np.unique(gt)[1:]:
        zs = np.nonzero((gt == label).any(axis=(1, 2)))[0]
        if max_slices is not None and len(zs) > max_slices:
            zs = zs[np.linspace(0, len(zs) - 1, max_slices).round().astype(int)]
        for z in zs:
            per_slice[int(z)].append(int(label))
    return dict(sorted(per_slice.items()))


def count_targets(data_dir: str | Path, pairs: list[dict], max_slices: int | None = None) -> int:
    """How many targets `iter_targets` will give (for a progress bar with a total); reads each
    pair once, so a damaged file or a mask of the wrong size is found before any model work."""
    total = 0
    for pair in pairs:
        img, gt = load_pair(data_dir, pair)
        total += sum(len(v) for v in _label_slices(gt, img.is_volume, max_slices).values())
    return total


def filter_pairs(
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
    pairs: list[dict] | None = None,
) -> Iterator[Target]:
    """Yield every (image or slice, label) target of the manifest, grouped by image/slice.

    Args:
        datasets: only these dataset names (default: all).
        max_cases: at most this many cases per dataset.
        max_slices: for volumes, at most this many slices per label, evenly spread.
        pairs: the pairs to use (from `select_pairs`), instead of datasets / max_cases.
    """
    if pairs is None:
        pairs = select_pairs(data_dir, datasets, max_cases)
    for pair in pairs:
        yield from pair_targets(data_dir, pair, max_slices)


def pair_targets(data_dir: str | Path, pair: dict, max_slices: int | None = None
                 ) -> Iterator[Target]:
    """The targets of one manifest pair (every label of the image, or of each volume slice
    holding it; `max_slices` per label at most, evenly spread)."""
    data_dir = Path(data_dir)
    img, gt = load_pair(data_dir, pair)
    preset = suggest_preset(img.data, pair.get("modality", ""))
    bounds = preset.bounds(img.data) if img.is_volume else None
    for z, labels in _label_slices(gt, img.is_volume, max_slices).items():
        image = img.data if z is None else img.data[z]
        truth = gt if z is None else gt[z]
        for label in labels:
            yield Target(pair["dataset"], pair["case"], label, z, image, truth == label, preset,
                         bounds)


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
