"""Torch-free image preparation and mask resizing for the ONNX path (numpy only).

The resizes reproduce `torch.nn.functional.interpolate` exactly (same taps and weights), written as
separable sparse weight matrices, so an ONNX run sees the same encoder input as the torch path and
masks land on the same pixels. This keeps torch out of the process once models are exported.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

SAM_MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
SAM_STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)


@lru_cache(maxsize=64)
def aa_weights(in_size: int, out_size: int) -> np.ndarray:
    """(out, in) weights of torch's antialiased bilinear resize (`antialias=True`)."""
    scale = in_size / out_size
    support = scale if scale >= 1.0 else 1.0  # interp_size 2 -> support 1, widened when shrinking
    inv = 1.0 / scale if scale >= 1.0 else 1.0
    w = np.zeros((out_size, in_size), dtype=np.float64)
    for i in range(out_size):
        center = scale * (i + 0.5)
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        taps = np.arange(lo, hi)
        weights = np.maximum(0.0, 1.0 - np.abs((taps - center + 0.5) * inv))
        total = weights.sum()
        w[i, lo:hi] = weights / total if total > 0 else 0.0
    return w.astype(np.float32)


@lru_cache(maxsize=64)
def bilinear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two source indices and the second one's weight per output (align_corners=False)."""
    scale = in_size / out_size
    src = np.maximum((np.arange(out_size) + 0.5) * scale - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    frac = (src - i0).astype(np.float32)
    return i0, i1, frac


def resize_bilinear(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of the last two axes, like `F.interpolate(..., align_corners=False)`."""
    h, w = x.shape[-2:]
    out_h, out_w = size
    if (h, w) != (out_h, out_w):
        if out_h != h:
            r0, r1, fy = bilinear_taps(h, out_h)
            fy = fy[:, None]
            x = x[..., r0, :] * (1.0 - fy) + x[..., r1, :] * fy
        if out_w != w:
            c0, c1, fx = bilinear_taps(w, out_w)
            x = x[..., c0] * (1.0 - fx) + x[..., c1] * fx
    return np.ascontiguousarray(x, dtype=np.float32)


def resize_antialias(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(C, H, W) float32 -> (C, h, w), like `F.interpolate(bilinear, antialias=True)`.

    Summed in float64 and rounded once to float32, so the result does not depend on how many
    threads the BLAS library uses (its float32 sums change order with the thread count, and a
    cached embedding must be the same whichever process, worker or front end made it).
    """
    wy = aa_weights(image.shape[1], size[0]).astype(np.float64)
    wx = aa_weights(image.shape[2], size[1]).astype(np.float64)
    out = np.einsum("yh,chw,xw->cyx", wy, image.astype(np.float64), wx, optimize=True)
    return out.astype(np.float32)


def prepare_input(
    image01: np.ndarray, image_size: int, normalization: str = "unit"
) -> tuple[np.ndarray, tuple[int, int]]:
    """Resize the longest side, normalise and pad a float [0, 1] (H, W, 3) image.

    The one preprocessing of every backend (torch gets this array as a tensor).

    Returns:
        The (1, 3, S, S) float32 encoder input and the (h, w) size of the image in the padding.
    """
    h, w = image01.shape[:2]
    scale = image_size / max(h, w)
    new_h, new_w = max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))
    chw = np.ascontiguousarray(np.asarray(image01, dtype=np.float32).transpose(2, 0, 1))
    x = resize_antialias(chw, (new_h, new_w))
    if normalization == "unit":
        lo, hi = float(x.min()), float(x.max())
        x = (x - lo) / max(hi - lo, 1e-8)
    else:
        x = (x * 255.0 - SAM_MEAN[:, None, None]) / SAM_STD[:, None, None]
    out = np.zeros((1, 3, image_size, image_size), dtype=np.float32)
    out[0, :, :new_h, :new_w] = x
    return out, (new_h, new_w)


def positive_window(logits: np.ndarray, margin: int = 1) -> tuple[slice, slice] | None:
    """Rows/cols of a 2D logit map that can hold positive values after bilinear upsampling.

    A bilinear sample is a convex mix of its neighbours, so outside the positive pixels grown by
    one pixel every upsampled value is <= 0: only this window needs upsampling. None if empty.
    """
    pos = logits > 0
    rows, cols = np.nonzero(pos.any(axis=1))[0], np.nonzero(pos.any(axis=0))[0]
    if rows.size == 0:
        return None
    h, w = logits.shape
    return (
        slice(max(rows[0] - margin, 0), min(rows[-1] + margin + 1, h)),
        slice(max(cols[0] - margin, 0), min(cols[-1] + margin + 1, w)),
    )


def upscale_logits(
    logits: np.ndarray, image_size: int, input_size: tuple[int, int], original_size: tuple[int, int]
) -> np.ndarray:
    """(N, 1|-, S, S) low-res logits -> (N, H, W) logits on the original image grid.

    Two bilinear steps, as segment_anything's postprocessing: to the encoder frame, crop the
    padding, to the original size.
    """
    x = logits.reshape(-1, *logits.shape[-2:]).astype(np.float32, copy=False)
    x = resize_bilinear(x, (image_size, image_size))
    x = x[:, : input_size[0], : input_size[1]]
    return resize_bilinear(x, original_size)


def _touches(taps: np.ndarray, window: slice) -> np.ndarray:
    return (taps >= window.start) & (taps < window.stop)


def mask_from_logits(
    logits: np.ndarray, image_size: int, input_size: tuple[int, int], original_size: tuple[int, int]
) -> np.ndarray:
    """Boolean (N, H, W) masks `upscale_logits(...) > 0`, upsampling only where it can be true.

    Exact: rows/columns whose two bilinear taps both fall outside `positive_window` are <= 0.
    For a 1000 x 1000 image and a small object this skips most of the work.
    """
    x = logits.reshape(-1, *logits.shape[-2:]).astype(np.float32, copy=False)
    if x.shape[-1] != image_size:
        x = resize_bilinear(x, (image_size, image_size))
    x = x[:, : input_size[0], : input_size[1]]
    out_h, out_w = original_size
    masks = np.zeros((len(x), out_h, out_w), dtype=bool)
    r0, r1, fy = bilinear_taps(x.shape[1], out_h)
    c0, c1, fx = bilinear_taps(x.shape[2], out_w)
    for i, plane in enumerate(x):
        window = positive_window(plane, margin=0)
        if window is None:
            continue
        rs, cs = window
        rows = np.nonzero(_touches(r0, rs) | _touches(r1, rs))[0]
        cols = np.nonzero(_touches(c0, cs) | _touches(c1, cs))[0]
        if not len(rows) or not len(cols):
            continue  # a shrinking resize whose taps all miss the positive logits: all <= 0
        wy = fy[rows, None]
        part = plane[r0[rows]] * (1.0 - wy) + plane[r1[rows]] * wy
        wx = fx[cols]
        part = part[:, c0[cols]] * (1.0 - wx) + part[:, c1[cols]] * wx
        masks[i, rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] = part > 0.0
    return masks
