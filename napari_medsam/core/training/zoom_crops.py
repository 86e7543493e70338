"""Training windows for small objects: what the predictor's zoom (`core.zoom`) will show.

At inference a small object is decoded on a re-encoded window around it; an adapter that is to
work there must have seen such windows. For an image with small objects this picks some of them
and cuts the window the zoom policy would cut around each, with the jitter a real prompt gives
(box margin, window size and centre), keeping as targets only the objects wholly inside it.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..metrics import bbox
from ..zoom import ZoomPolicy, square_window


def crop_windows(image: np.ndarray, labels: np.ndarray, policy: ZoomPolicy,
                 rng: np.random.Generator, per_image: int = 1
                 ) -> Iterator[tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]]:
    """(crop, crop labels, window) for up to `per_image` small objects of `labels`."""
    shape = labels.shape[:2]
    values = [int(v) for v in np.unique(labels) if v != 0]
    small = []
    for value in values:
        box = bbox(labels == value, 0)
        if box is not None and policy.window(box, shape) is not None:
            small.append((value, box))
    order = rng.permutation(len(small))[:per_image]
    for i in order:
        value, box = small[i]
        grow = rng.uniform(0, 8, 4)  # a drawn box's margin, or a first mask's extent
        jittered = box + np.array([-grow[0], -grow[1], grow[2], grow[3]])
        size = max(jittered[2] - jittered[0], jittered[3] - jittered[1])
        side = max(policy.context * size * rng.uniform(0.8, 1.25), policy.min_side,
                   max(shape) / policy.max_zoom)
        cx = (jittered[0] + jittered[2]) / 2 + rng.uniform(-0.1, 0.1) * side
        cy = (jittered[1] + jittered[3]) / 2 + rng.uniform(-0.1, 0.1) * side
        x0, y0, x1, y1 = square_window(cx, cy, side, shape)
        crop_labels = labels[y0:y1, x0:x1].copy()
        for other in np.unique(crop_labels):  # objects cut by the window are not targets
            if other == 0:
                continue
            inside = crop_labels == other
            if inside.sum() < (labels == other).sum():
                crop_labels[inside] = 0
        if crop_labels.any() and min(crop_labels.shape) >= 8:
            yield image[y0:y1, x0:x1], crop_labels, (x0, y0, x1, y1)
