"""Click simulation: where an annotator clicks next, given the truth and the current mask.

The same rule drives training (on the 256 x 256 model frame) and evaluation (on the image grid):
the first click lands on the most interior point of the object (the maximum of its distance
transform); each next click lands on the most interior point of the largest error region,
positive where the object was missed, negative where the mask spills over. Training may add
jitter (any point whose depth is close to the maximum) so the adapter does not learn to expect
perfectly centred clicks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import regions


@dataclass(frozen=True)
class Click:
    """One simulated click, in (x, y) pixel coordinates of the grid it was computed on."""

    x: int
    y: int
    positive: bool


def interior_point(
    region: np.ndarray, rng: np.random.Generator | None = None, jitter: float = 0.0
) -> tuple[int, int]:
    """(y, x) of the deepest pixel of `region` (distance to its border, image edge included).

    Args:
        region: bool mask with at least one pixel.
        rng, jitter: with a generator and jitter in (0, 1], pick at random among pixels whose
            depth is at least (1 - jitter) x the maximum (training only).
    """
    depth = regions.depth(np.pad(region, 1))[1:-1, 1:-1]
    top = float(depth.max())
    if rng is None or jitter <= 0.0 or top <= 1.0:
        y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)
        return int(y), int(x)
    ys, xs = np.nonzero(depth >= max(1.0, (1.0 - jitter) * top))
    i = int(rng.integers(len(ys)))
    return int(ys[i]), int(xs[i])


def largest_component(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """The largest 4-connected component of `mask` and its area (0 when empty)."""
    labels, n = regions.label(mask)
    if n == 0:
        return mask, 0
    areas = np.bincount(labels.ravel())[1:]
    best = int(np.argmax(areas))
    return labels == best + 1, int(areas[best])


def next_click(
    truth: np.ndarray,
    pred: np.ndarray | None = None,
    valid: np.ndarray | None = None,
    rng: np.random.Generator | None = None,
    jitter: float = 0.0,
) -> Click | None:
    """The click a careful annotator gives next, or None when the mask is already exact.

    Args:
        truth: bool ground-truth mask.
        pred: bool current mask (None or empty for the first click).
        valid: bool mask of pixels that can be clicked (the image inside the model's padding).
        rng, jitter: see `interior_point` (training only).
    """
    truth = np.asarray(truth, bool)
    pred = np.zeros_like(truth) if pred is None else np.asarray(pred, bool)
    missed, extra = truth & ~pred, pred & ~truth
    if valid is not None:
        missed, extra = missed & valid, extra & valid
    region_fn, area_fn = largest_component(missed)
    region_fp, area_fp = largest_component(extra)
    if area_fn == 0 and area_fp == 0:
        return None
    positive = area_fn >= area_fp
    y, x = interior_point(region_fn if positive else region_fp, rng, jitter)
    return Click(x=x, y=y, positive=positive)


def clicks_to_reach(dices: list[float], threshold: float, cap: int = 20) -> int:
    """NoC: the number of clicks after which Dice first reaches `threshold` (`cap` if never)."""
    for k, value in enumerate(dices[:cap], start=1):
        if value >= threshold:
            return k
    return cap
