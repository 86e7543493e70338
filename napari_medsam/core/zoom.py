"""Zoom for small objects: decode on a re-encoded window around the prompt.

At LiteMedSAM's 256 px input a lung nodule of a 512 px CT slice is a few pixels wide and spans one
or two of the 64 x 64 embedding cells, so even a box gives a poor mask. When the object a prompt
points at is small, the predictor encodes a square window around it (a few times the object's
size) at the model's full input size, decodes there, and pastes the mask back into the image: the
object is seen 2-8x larger. The window's embedding is cached like any image's, and it is kept for
the next clicks on the same object (their low-res logits live in the window's frame). A window
drawn from a coarse whole-image mask is refitted to the zoomed mask when that is much smaller, and
grown when the mask reaches its border.

Numpy only: the windows, and moving low-res logits from one frame (the whole image or a window)
to another, for the mask prompt of the next click.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .backends.base import OUTSIDE_LOGIT
from .backends.preprocess import resize_bilinear, upscale_logits

Window = tuple[int, int, int, int]  # x0, y0, x1, y1 in image pixels, end exclusive


@dataclass(frozen=True)
class ZoomPolicy:
    """When and how much to zoom.

    Attributes:
        max_extent: zoom when the object's longest side is below this fraction of the image's
            longest side.
        context: the window's side is this many times the object's longest side ...
        min_side: ... but at least this many pixels ...
        max_zoom: ... and at least the image's longest side / max_zoom (no blur from extreme
            upsampling).
        min_image: no zoom on an image whose longest side is under this many pixels: the
            model's 256-pixel input already magnifies it, and a window only adds blur (the
            122-pixel sample CT lost 9 points of box Dice on its small organs with zoom).
        refit: after a click decoded in a window, the window drawn around the zoomed mask
            replaces it when its side is at most this fraction of the window's (the mask the
            window was drawn from was coarser; a box gives the extent and is never refitted;
            0: never refit).
        refit_side: a refitted window is at least this many pixels wide, so the model's 256 px
            input magnifies the image's pixels at most 4x (an 8x window of a 256 px MRI slice
            blurred a small right ventricle from 0.89 to 0.76 Dice).
    """

    max_extent: float = 0.15
    context: float = 4.0
    min_side: int = 32
    max_zoom: float = 8.0
    min_image: int = 160
    refit: float = 0.8
    refit_side: int = 64

    def window(self, extent, shape: tuple[int, int]) -> Window | None:
        """The window around `extent` (x0, y0, x1, y1 of the object, image pixels), or None when
        the object is not small enough for a zoom to pay."""
        h, w = shape
        x0, y0, x1, y1 = (float(v) for v in extent)
        size = max(x1 - x0, y1 - y0, 1.0)
        long_side = max(h, w)
        if long_side < self.min_image or size >= self.max_extent * long_side:
            return None
        width = max(self.context * size, self.min_side, long_side / self.max_zoom)
        if width >= 0.9 * long_side:
            return None
        return square_window((x0 + x1) / 2, (y0 + y1) / 2, width, shape)

    def refitted(self) -> ZoomPolicy:
        """The policy a refitted window is drawn with (no narrower than `refit_side`)."""
        return replace(self, min_side=max(self.min_side, self.refit_side))


def square_window(cx: float, cy: float, side: float, shape: tuple[int, int]) -> Window:
    """A side x side window centred on (cx, cy), shifted to lie inside the image (clipped where
    the image is smaller)."""
    h, w = shape
    side = int(round(side))

    def span(center: float, limit: int) -> tuple[int, int]:
        lo = int(round(center - side / 2))
        lo = min(max(lo, 0), max(limit - side, 0))
        return lo, min(lo + side, limit)

    (x0, x1), (y0, y1) = span(cx, w), span(cy, h)
    return x0, y0, x1, y1


def contains(window: Window, points: np.ndarray | None = None, box: np.ndarray | None = None,
             margin: float = 0.1) -> bool:
    """Every click (and the box) lies inside the window, away from its border by `margin` of
    its size."""
    x0, y0, x1, y1 = window
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    pts = [] if points is None else list(np.asarray(points, float).reshape(-1, 2))
    if box is not None:
        b = np.asarray(box, float).reshape(4)
        pts += [b[:2], b[2:]]
    return all(x0 + mx <= x <= x1 - mx and y0 + my <= y <= y1 - my for x, y in pts)


def touches_border(mask: np.ndarray, window: Window, shape: tuple[int, int]) -> bool:
    """The mask (image grid) reaches a side of the window that is not the image's own edge:
    the object is larger than the window."""
    x0, y0, x1, y1 = window
    h, w = shape
    sides = []
    if x0 > 0:
        sides.append(mask[y0:y1, x0])
    if x1 < w:
        sides.append(mask[y0:y1, x1 - 1])
    if y0 > 0:
        sides.append(mask[y0, x0:x1])
    if y1 < h:
        sides.append(mask[y1 - 1, x0:x1])
    return any(edge.any() for edge in sides)


def side(window: Window) -> int:
    """The longer side of a window, in image pixels."""
    return max(window[2] - window[0], window[3] - window[1])


def grow(window: Window, factor: float, shape: tuple[int, int]) -> Window:
    """The window scaled by `factor` about its centre (kept inside the image)."""
    x0, y0, x1, y1 = window
    return square_window((x0 + x1) / 2, (y0 + y1) / 2, factor * side(window), shape)


def extent_of(mask: np.ndarray, points: np.ndarray | None = None) -> tuple | None:
    """x0, y0, x1, y1 around the mask's pixels and the clicks (None when there is neither)."""
    xs, ys = [], []
    if mask is not None and mask.any():
        rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
        xs += [cols[0], cols[-1] + 1]
        ys += [rows[0], rows[-1] + 1]
    if points is not None:
        pts = np.asarray(points, float).reshape(-1, 2)
        xs += list(pts[:, 0])
        ys += list(pts[:, 1])
    if not xs:
        return None
    return min(xs), min(ys), max(xs), max(ys)


@dataclass(frozen=True)
class Frame:
    """Where low-res logits live: a window of the image (None: the whole image) and the model
    frame geometry of its embedding."""

    window: Window | None
    input_size: tuple[int, int]  # (h, w) of the resized window inside the padded model input
    original_size: tuple[int, int]  # (h, w) of the window (or image) in image pixels


def move_logits(logits: np.ndarray, src: Frame, dst: Frame, image_size: int,
                shape: tuple[int, int]) -> np.ndarray:
    """(S, S) low-res logits of `src` re-expressed in `dst`'s frame (the previous mask as the
    mask prompt of a click decoded in another window). Outside `src`: surely background."""
    side = logits.shape[-1]
    grid = upscale_logits(logits[None, None], image_size, src.input_size, src.original_size)[0]
    canvas = np.full(shape, OUTSIDE_LOGIT, np.float32)
    sx0, sy0 = (src.window[0], src.window[1]) if src.window else (0, 0)
    canvas[sy0:sy0 + grid.shape[0], sx0:sx0 + grid.shape[1]] = grid
    if dst.window is not None:
        x0, y0, x1, y1 = dst.window
        canvas = canvas[y0:y1, x0:x1]
    resized = resize_bilinear(canvas[None], dst.input_size)[0]
    frame = np.full((image_size, image_size), OUTSIDE_LOGIT, np.float32)
    frame[: resized.shape[0], : resized.shape[1]] = resized
    return resize_bilinear(frame[None], (side, side))[0]
