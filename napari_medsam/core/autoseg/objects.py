"""Automatic segmentation on numpy, torch-free: the 256 grid <-> the image, separate objects
of a head's map, and merging per-structure logits into one label map.
"""

from __future__ import annotations

import numpy as np

from .. import regions
from ..backends.preprocess import resize_bilinear
from ..embeddings import Embedding

LOW_RES = 256  # side of the decoder's low-res logits (4x the 64x64 embedding)


def frame_size(emb: Embedding, image_size: int, side: int = LOW_RES) -> tuple[int, int]:
    """(h, w) of the image inside a `side` x `side` grid of the padded input square."""
    h, w = emb.input_size
    return max(1, round(h * side / image_size)), max(1, round(w * side / image_size))


def to_image(logits: np.ndarray, emb: Embedding, image_size: int) -> np.ndarray:
    """(N, 256, 256) low-res logits -> (N, H, W) logits on the original image grid."""
    x = np.asarray(logits, dtype=np.float32)
    h, w = frame_size(emb, image_size, x.shape[-1])
    return resize_bilinear(np.ascontiguousarray(x[:, :h, :w]), emb.original_size)


def merge_structures(logits: np.ndarray, values: list[int], keep_largest: bool) -> np.ndarray:
    """(S, H, W) logits -> uint16 label map: each pixel takes the most confident positive one.

    With `keep_largest`, each structure keeps only its largest connected region (anatomy such as
    a heart chamber is one region; stray specks are dropped).
    """
    best = logits.argmax(axis=0)
    positive = logits.max(axis=0) > 0
    out = np.zeros(logits.shape[1:], dtype=np.uint16)
    for i, value in enumerate(values):
        mask = positive & (best == i)
        if keep_largest and mask.any():
            comps, _ = regions.label(mask)  # 4-connected
            mask = comps == (np.bincount(comps.ravel())[1:].argmax() + 1)
        out[mask] = value
    return out


def find_objects(prob: np.ndarray, emb: Embedding, image_size: int,
                 threshold: float = 0.5) -> list[dict]:
    """Separate objects of a head's low-res maps: one box and one point per connected region.

    Args:
        prob: (S, g, g) foreground probabilities on the padded input grid.

    Returns:
        Dicts {"structure": index, "box": (x0, y0, x1, y1), "point": (x, y), "score": mean
        probability} in original image pixels, ready for the predictor's box/point prompts.
    """
    g = prob.shape[-1]
    oh, ow = emb.original_size
    gh, gw = frame_size(emb, image_size, g)
    sy, sx = oh / (gh * 1.0), ow / (gw * 1.0)  # original pixels per grid cell
    found = []
    for s, p in enumerate(prob):
        inside = p[:gh, :gw]
        comps, _ = regions.label(inside > threshold, diagonal=True)  # 8-connected
        for label, where in enumerate(regions.bounding_boxes(comps), start=1):
            y0, y1, x0, x1 = where[0].start, where[0].stop, where[1].start, where[1].stop
            own = comps == label
            cy, cx = np.unravel_index(np.argmax(np.where(own, inside, 0)), (gh, gw))
            found.append({
                "structure": s,
                "box": (max(0.0, x0 * sx), max(0.0, y0 * sy),
                        min(ow - 1.0, x1 * sx), min(oh - 1.0, y1 * sy)),
                "point": (min(ow - 1.0, (cx + 0.5) * sx), min(oh - 1.0, (cy + 0.5) * sy)),
                "score": float(inside[own].mean()),
            })
    return found
