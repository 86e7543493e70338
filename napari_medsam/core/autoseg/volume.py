"""A volume segmented as a volume: the head on every slice, then what the neighbours say.

A head sees one slice at a time. On a volume each structure is one connected 3D object, so after
the slice-by-slice pass every structure is made consistent across slices:
  * islands: pieces of a structure that sit on one slice only and touch none of its pieces on
    the neighbouring slices are dropped (a speck the head found in the wrong place);
  * gaps: a slice where the structure is missing between two slices that hold it (overlapping
    each other) is segmented again with a box around the neighbours' masks, the prompt the model
    was trained on (the head alone was unsure there);
  * ends: a sliver on the first or last slice of a structure (under a fifth of the next slice's
    area: drawn past the structure's end) is dropped; then the slice after the last one holding
    the structure is tried the same way from its one neighbour and kept when the model is
    confident and the mask overlaps it (apex, pole);
  * pieces (heads that keep one region per structure): a 3D piece under a tenth of the
    structure's largest one is dropped (the structure drawn again on slices apart from itself).
Objects of other structures are never overwritten.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .. import regions
from ..errors import CancelledError
from ..metrics import bbox, dice
from .infer import segment_embedding

ProgressFn = Callable[[int, int], None]
MIN_GAP_OVERLAP = 0.3  # the two neighbours of a gap must look like one object (Dice)
# To extend a structure past its last slice: the decoder's IoU estimate, and the overlap (Dice)
# with that last slice. Fitted on held-back training patients of ACDC + MS-CMR and CHAOS (10 + 2):
# 0.3 (was 0.5) keeps a right ventricle whose shape changes fast towards the base; 0.0-0.3 tie
# there, 0.4 and up lose it, and a lower or higher score adds wrong slices or loses right ones.
MIN_END_SCORE = 0.8
MIN_END_OVERLAP = 0.3
# An end slice holding less than this fraction of the next slice's area is a sliver, dropped
# (fitted on the same patients: 0.2 best on the cardiac heads, 0.2-0.5 tie on the abdomen ones).
MIN_END_FRACTION = 0.2
# A structure of a keep-largest head is one object: its 3D pieces under this fraction of the
# largest piece are dropped after the passes above. Fitted on the same patients (fractions 0.02
# to 1.0 of the largest piece): 0.1 is the best on the held-back patients of all four MRI heads
# (0.05-0.1 tie on the abdomen heads, 0.1-1.0 on the cardiac ones).
MIN_PIECE_FRACTION = 0.1


def segment_volume(session, head, mode=None, consistent: bool = True,
                   progress: ProgressFn | None = None,
                   cancel: Callable[[], bool] | None = None) -> np.ndarray:
    """(Z, H, W) uint16 label map of the session's volume with the head's structure values.

    Raises CancelledError (with `.labels`, the slices done) when `cancel()` turns true.
    """
    n = session.n_slices
    labels = np.zeros(session.image.shape, np.uint16)
    for z in range(n):
        if cancel is not None and cancel():
            exc = CancelledError(f"Automatic segmentation cancelled after {z} of {n} slices.")
            exc.labels = labels
            raise exc
        session.embed(z)
        labels[z] = segment_embedding(session.predictor, head, mode).labels
        if progress is not None:
            progress(z + 1, n + (n if consistent else 0))
    if consistent:
        labels = make_consistent(session, labels, head.structures, progress,
                                 one_object=head.keep_largest)
    return labels


def make_consistent(session, labels: np.ndarray, values: list[int],
                    progress: ProgressFn | None = None, one_object: bool = True) -> np.ndarray:
    """Drop single-slice islands and end slivers, fill one-slice gaps, try one slice past each
    end; then, for a structure that is one object (`one_object`: a keep-largest head's), drop its
    3D pieces far smaller than its main one."""
    out = labels.copy()
    n = len(out)
    for value in values:
        mask = trim_ends(drop_islands(out == value))
        out[(out == value) & ~mask] = 0
        present = [z for z in range(n) if mask[z].any()]
        if not present:
            continue
        for z in range(present[0], present[-1] + 1):  # gaps between slices that hold it
            if mask[z].any() or not (0 < z < n - 1) or not mask[z - 1].any() \
                    or not mask[z + 1].any() or dice(mask[z - 1], mask[z + 1]) < MIN_GAP_OVERLAP:
                continue
            filled, _ = _decode_box(session, z, mask[z - 1] | mask[z + 1])
            _write(out, z, filled, value)
        for z, ref in ((present[0] - 1, present[0]), (present[-1] + 1, present[-1])):  # ends
            if 0 <= z < n and not (out[z] == value).any():
                extended, score = _decode_box(session, z, mask[ref])
                if score >= MIN_END_SCORE and dice(extended, mask[ref]) >= MIN_END_OVERLAP:
                    _write(out, z, extended, value)
        if one_object:
            whole = out == value
            out[whole & ~main_pieces(whole)] = 0
        if progress is not None:
            progress(n + n * (values.index(value) + 1) // len(values), 2 * n)
    return out


def drop_islands(mask: np.ndarray) -> np.ndarray:
    """`mask` (Z, H, W) without the 3D-connected pieces that lie on one slice only, when the
    structure has a piece spanning several slices."""
    comps, count = regions.label(mask)  # 6-connected in 3D
    if count <= 1:
        return mask
    spans = [(s[0].stop - s[0].start) for s in regions.bounding_boxes(comps)]
    if max(spans) < 2:
        return mask  # every piece is on one slice: nothing says which are wrong
    keep = np.zeros(count + 1, bool)
    keep[1:] = np.array(spans) >= 2
    return keep[comps]


def main_pieces(mask: np.ndarray) -> np.ndarray:
    """`mask` (Z, H, W) without the 3D-connected pieces under MIN_PIECE_FRACTION of its largest
    piece's voxels (the structure drawn again apart from itself, e.g. a kidney on slices past its
    pole); a real object split by slices the head missed keeps its larger parts."""
    comps, count = regions.label(mask)  # 6-connected in 3D
    if count <= 1:
        return mask
    sizes = np.bincount(comps.ravel())
    sizes[0] = 0
    return (sizes >= MIN_PIECE_FRACTION * sizes.max())[comps] & mask


def trim_ends(mask: np.ndarray) -> np.ndarray:
    """`mask` (Z, H, W) without the first or last slice of a structure spanning 3 slices or more
    when that slice holds under MIN_END_FRACTION of its neighbour's area."""
    present = np.nonzero(mask.any(axis=(1, 2)))[0]
    if len(present) < 3:
        return mask
    out = mask.copy()
    areas = mask.sum(axis=(1, 2))
    for end, inner in ((present[0], present[0] + 1), (present[-1], present[-1] - 1)):
        if areas[end] < MIN_END_FRACTION * areas[inner]:
            out[end] = False
    return out


def _decode_box(session, z: int, guide: np.ndarray) -> tuple[np.ndarray, float]:
    """The model's mask on slice z for a box around `guide` (a neighbour's mask), its score."""
    session.embed(z)
    pred = session.predictor.predict(box=bbox(guide, 3), zoom=False)
    return pred.masks[0], float(pred.scores[0])


def _write(labels: np.ndarray, z: int, mask: np.ndarray, value: int) -> None:
    labels[z][mask & (labels[z] == 0)] = value
