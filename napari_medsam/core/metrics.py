"""Overlap and distance metrics between binary masks: Dice, IoU, HD95."""

from __future__ import annotations

import numpy as np

from . import regions


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice coefficient; 1.0 when both masks are empty."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    total = pred.sum() + truth.sum()
    return 1.0 if total == 0 else float(2.0 * np.logical_and(pred, truth).sum() / total)


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union; 1.0 when both masks are empty."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    union = np.logical_or(pred, truth).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, truth).sum() / union)


def hd95(pred: np.ndarray, truth: np.ndarray, spacing=None) -> float:
    """95th percentile symmetric surface distance (in `spacing` units); inf if one mask is empty."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    if not pred.any() and not truth.any():
        return 0.0
    if not pred.any() or not truth.any():
        return float("inf")

    sp, st = regions.border(pred), regions.border(truth)
    dist_to_truth = regions.depth(~st, spacing)
    dist_to_pred = regions.depth(~sp, spacing)
    distances = np.concatenate([dist_to_truth[sp], dist_to_pred[st]])
    return float(np.percentile(distances, 95))


def bbox(mask: np.ndarray, margin: int = 0) -> np.ndarray | None:
    """Tight (x0, y0, x1, y1) box of a 2D mask grown by `margin` and clipped; None if empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    h, w = mask.shape
    return np.array(
        [max(xs.min() - margin, 0), max(ys.min() - margin, 0),
         min(xs.max() + margin, w - 1), min(ys.max() + margin, h - 1)],
        dtype=np.float64,
    )
