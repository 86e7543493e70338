"""Predictor: `set_image` encodes once (through the cache); `predict` only decodes prompts.

Coordinates are (x, y) in original image pixels. Images of any size and aspect ratio are resized
on the longest side and padded, and masks are mapped back exactly to the original grid.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from . import checks
from .backends.preprocess import mask_from_logits
from .embeddings import Embedding, EmbeddingCache, make_key, pixel_hash
from .errors import InputError, NoImageError
from .intensity import Preset, get_preset
from .zoom import (
    Frame,
    Window,
    ZoomPolicy,
    contains,
    extent_of,
    grow,
    move_logits,
    side,
    touches_border,
)

if TYPE_CHECKING:  # torch stays unimported on the ONNX path
    from .backends.base import Backend
    from .model import SamModel

log = logging.getLogger(__name__)
EMPTY_LOGIT = -20.0  # low-res logits of an empty answer: background everywhere


@dataclass
class Prediction:
    """Decoder output mapped back to the image.

    masks: bool (N, H, W), one per box (or one for point-only prompts).
    scores: float (N,), the decoder's predicted IoU.
    low_res_logits: float32 (N, 256, 256), feed back as `mask_input` for the next click.
    window: the window of the image the object was decoded in (a zoom on a small object,
        `core.zoom`), None for the whole image: the frame of `low_res_logits`; pass it back
        with them as `predict(..., window=...)`.
    note: why the masks are empty without asking the model (a uniform image, only negative
        clicks), '' otherwise.
    pending: with `predict(defer_windows=True)`, the zoom window this mask would be decoded in
        had its embedding been at hand (None when nothing waits): encode it off the UI thread
        (`window_job`), then decode the same prompts again.
    """

    masks: np.ndarray
    scores: np.ndarray
    low_res_logits: np.ndarray
    window: Window | None = None
    note: str = ""
    pending: Window | None = None


def validate_image(image: np.ndarray) -> np.ndarray:
    """Check a 2D gray or RGB(A) image and return it as (H, W) or (H, W, 3)."""
    image = np.asarray(image)
    if image.size == 0:
        raise InputError("The image is empty (it has no pixels).")
    if image.dtype.kind not in "uifb":
        raise InputError(f"Pixel type {image.dtype} is not supported; use integer or float pixels.")
    if image.ndim == 3 and image.shape[-1] in (1, 3, 4):
        image = image[..., 0] if image.shape[-1] == 1 else image[..., :3]
    if image.ndim != 2 and not (image.ndim == 3 and image.shape[-1] == 3):
        raise InputError(
            f"Expected a 2D image (H, W) or an RGB image (H, W, 3), got shape {image.shape}. "
            "For a volume, pass one slice at a time (or use a Session)."
        )
    if min(image.shape[:2]) < 2:
        raise InputError(f"The image is too small to segment: {image.shape[:2]} pixels.")
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        bad = int((~np.isfinite(image)).sum())
        raise InputError(
            f"The image has {bad} NaN or infinite pixel values. "
            "Fill or crop them before segmenting."
        )
    return image


def to_unit_rgb(image: np.ndarray, preset: Preset, bounds=None) -> np.ndarray:
    """Apply the intensity preset and give a float32 (H, W, 3) image in [0, 1]."""
    unit = preset.apply(image, bounds)
    return np.repeat(unit[..., None], 3, axis=2) if unit.ndim == 2 else unit


class Predictor:
    """Segment Anything-style predictor over a `SamModel` with an embedding cache.

    Args:
        model: a loaded torch model to run (a torch backend over it), or None.
        cache: an `EmbeddingCache`; a memory-only one is made when None.
        backend: what runs the encoder and decoder (see `core.runtime.build_backend`); default:
            a torch backend over `model`, or the default `RuntimeSpec` (LiteMedSAM on the best
            device) when no model is given either.
        zoom: decode small objects on a re-encoded window around them (`core.zoom`); None or
            False: always on the whole image.
    """

    def __init__(
        self,
        model: SamModel | None = None,
        cache: EmbeddingCache | None = None,
        backend: Backend | None = None,
        zoom: ZoomPolicy | bool | None = None,
    ):
        if backend is None:
            from .backends.torch_backend import TorchBackend
            from .runtime import RuntimeSpec, build_backend

            backend = TorchBackend(model) if model is not None else build_backend(RuntimeSpec())
        self.backend = backend
        self.cache = cache if cache is not None else EmbeddingCache()
        self.embedding: Embedding | None = None
        self.key: str | None = None
        self._features: Any = None
        self.encoder_calls = 0
        self.zoom: ZoomPolicy | None = ZoomPolicy() if zoom is True else (zoom or None)
        self._source: tuple | None = None  # (image, preset, bounds): windows are cut from it
        self._window: tuple | None = None  # the last window's ((key, window), entry, features)
        self.blank = ""  # why the current image holds nothing to segment ('' when it does)

    @property
    def model(self) -> SamModel:
        """The torch model (with an ONNX backend it is loaded on first access)."""
        return self.backend.model

    # ---- encoding -------------------------------------------------------------------------
    def image_key(self, image: np.ndarray, preset: str | Preset = "auto", bounds=None) -> str:
        """The cache key `set_image` would use for this image."""
        preset = get_preset(preset)
        prep = f"{preset.key}|{bounds}" if bounds is not None else preset.key
        return make_key(pixel_hash(validate_image(image)), self.backend.cache_id, prep)

    def set_image(
        self, image: np.ndarray, preset: str | Preset = "auto", bounds=None
    ) -> str:
        """Encode `image` (or take its embedding from the cache) and make it current.

        Args:
            image: (H, W) gray or (H, W, 3) RGB, any integer or float type.
            preset: intensity preset name (see `intensity.get_preset`).
            bounds: raw-intensity range to map to [0, 1], e.g. computed once for a whole volume.

        Returns:
            The cache key of the embedding.
        """
        image = validate_image(image)
        preset = get_preset(preset)
        key = self.image_key(image, preset, bounds)
        entry = self.cache.get(key)
        if entry is None or entry.original_size != tuple(image.shape[:2]):
            entry = self.compute_embedding(image, preset, bounds)
            self.cache.put(key, entry)
        self.set_embedding(entry, key)
        self._source = (image, preset, bounds if bounds is not None else preset.bounds(image))
        self.blank = checks.uninformative(image, preset, self._source[2])
        return key

    def cache_embedding(self, image: np.ndarray, preset: str | Preset = "auto",
                        bounds=None) -> bool:
        """Put the image's embedding in the cache without making it current (safe while
        another thread decodes on the current image). Returns True when it was computed."""
        image = validate_image(image)
        preset = get_preset(preset)
        key = self.image_key(image, preset, bounds)
        if key in self.cache:
            return False
        self.cache.put(key, self.compute_embedding(image, preset, bounds))
        return True

    def compute_embedding(self, image: np.ndarray, preset: Preset, bounds=None) -> Embedding:
        """Run the encoder (no cache)."""
        self.encoder_calls += 1
        features, resized = self.backend.encode(to_unit_rgb(image, preset, bounds))
        return Embedding(
            features=features,
            original_size=tuple(int(v) for v in image.shape[:2]),
            input_size=resized,
        )

    def set_embedding(self, entry: Embedding, key: str | None = None) -> None:
        """Make a precomputed embedding current (without its pixels no window can be cut:
        decoding then stays on the whole image)."""
        self.embedding = entry
        self.key = key
        self._features = self.backend.load_features(entry.features)
        self._source = None
        self.blank = ""

    def reset_image(self) -> None:
        self.embedding, self.key, self._features, self._source = None, None, None, None
        self.blank = ""

    def _require_image(self) -> Embedding:
        if self.embedding is None:
            raise NoImageError("No image is set: call set_image() before predict().")
        return self.embedding

    @property
    def is_image_set(self) -> bool:
        return self.embedding is not None

    @property
    def image(self) -> np.ndarray | None:
        """The pixels of the current image as given to `set_image` (None after
        `set_embedding`): propagation compares an object's intensity from slice to slice."""
        return None if self._source is None else self._source[0]

    @property
    def features(self) -> Any:
        """The current embedding as the backend holds it (a torch tensor for the torch backend,
        a (1, 256, 64, 64) numpy array for ONNX)."""
        if self._features is None:
            raise NoImageError("No image is set: call set_image() before predict().")
        return self._features

    # ---- decoding -------------------------------------------------------------------------
    def predict(
        self,
        points: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask: bool = False,
        window: Window | None = None,
        zoom: ZoomPolicy | bool | None = None,
        defer_windows: bool = False,
    ) -> Prediction:
        """Decode prompts on the current image.

        Args:
            points: (K, 2) or (N, K, 2) (x, y) clicks in image pixels.
            labels: (K,) or (N, K): 1 positive, 0 negative.
            box: (4,) or (N, 4) boxes x0, y0, x1, y1 in image pixels; N boxes give N masks.
            mask_input: (256, 256) or (N, 256, 256) logits from a previous prediction.
            multimask: decode three candidates and keep the best-scored one per prompt.
            window: the frame of `mask_input` (the previous prediction's `window`).
            zoom: a small object is decoded on a re-encoded window around it (`core.zoom`):
                None follows `self.zoom`, False never, a ZoomPolicy as given. One prompt only.
            defer_windows: never encode a zoom window here: when the window's embedding is
                not cached, return the best mask decoded without it, its window in `pending`
                (an interactive front end encodes it in the background and decodes again, so
                a click never waits for the encoder).
        """
        self._require_image()
        coords, lab, boxes = self._check_prompts(points, labels, box)
        masks_in = self._check_mask_input(mask_input)
        empty = self._nothing_to_segment(coords, lab, boxes)
        if empty is not None:
            return empty
        policy = self.zoom if zoom is None else (zoom or None)
        if policy is True:
            policy = ZoomPolicy()
        if self._source is None:
            policy = None  # the pixels are not at hand: no window can be encoded
        src = self._frame(window)
        single = (coords is None or len(coords) == 1) and (boxes is None or len(boxes) == 1)
        target = first = None
        if policy is not None and single:
            target, first = self._zoom_window(policy, coords, lab, boxes, masks_in, src)
            if target is None and first is not None:
                return first
        if defer_windows and not self._window_ready(target):
            pred = first if first is not None else \
                self._predict_in(None, coords, lab, boxes, masks_in, src, multimask)
            pred.pending = target
            return pred
        pred = self._predict_in(target, coords, lab, boxes, masks_in, src, multimask)
        if target is not None:
            pred = self._fit_window(policy, pred, coords, lab, boxes, masks_in, src, multimask,
                                    defer_windows)
        return pred

    def _fit_window(self, policy: ZoomPolicy, pred: Prediction, coords, lab, boxes, masks_in,
                    src: Frame, multimask: bool, defer: bool = False) -> Prediction:
        """Decode again when the zoomed mask says the window does not fit the object: larger
        when the mask reaches its border; tighter (clicks only) when the mask fits a much
        smaller window (a first window is drawn from the coarse whole-image mask, which for a
        small object often spills into its neighbours). `defer`: a window not encoded yet is
        left in `pred.pending` instead."""
        target, shape = pred.window, self.embedding.original_size
        if touches_border(pred.masks[0], target, shape):
            bigger = grow(target, 2.0, shape)  # the object is larger than the window
            bigger = bigger if side(bigger) < 0.9 * max(shape) else None
            if defer and not self._window_ready(bigger):
                pred.pending = bigger
                return pred
            return self._predict_in(bigger, coords, lab, boxes, masks_in, src, multimask)
        if boxes is not None or not pred.masks[0].any():
            return pred  # a box already gives the object's extent
        tighter = policy.refitted().window(extent_of(pred.masks[0], coords[0]), shape)
        if tighter is None or side(tighter) > policy.refit * side(target) \
                or not contains(tighter, points=coords[0], margin=0.0):
            return pred
        if defer and not self._window_ready(tighter):
            pred.pending = tighter
            return pred
        refit = self._predict_in(tighter, coords, lab, boxes, masks_in, src, multimask)
        return pred if touches_border(refit.masks[0], tighter, shape) else refit

    def _zoom_window(self, policy: ZoomPolicy, coords, lab, boxes, masks_in, src):
        """(window to decode in, or None for the whole image; the whole-image prediction made
        while deciding, or None)."""
        shape, first = self.embedding.original_size, None
        if boxes is not None:
            target = policy.window(boxes[0], shape)
        elif src.window is not None and contains(src.window, points=coords[0]):
            target = src.window  # the next click on the same object: same window
        else:
            first = self._predict_in(None, coords, lab, None, masks_in, src, False)
            target = policy.window(extent_of(first.masks[0], coords[0]), shape)
            if target is None:
                return None, first
        if target is not None and coords is not None and not contains(target, points=coords[0],
                                                                      margin=0.0):
            return None, None  # a click outside the object's window: decode the whole image
        return target, first

    def _predict_in(self, window: Window | None, coords, lab, boxes, masks_in, src: Frame,
                    multimask: bool) -> Prediction:
        """Decode on the whole image (window None) or on the embedding of a window of it."""
        emb, features = (self.embedding, self.features) if window is None else \
            self._window_embedding(window)
        dst = Frame(window, emb.input_size, emb.original_size)
        size = self.backend.image_size
        if masks_in is not None and src != dst:
            shape = self.embedding.original_size
            masks_in = np.stack([move_logits(m[0], src, dst, size, shape)
                                 for m in masks_in])[:, None]
        ox, oy = (window[0], window[1]) if window is not None else (0, 0)
        sy, sx = emb.input_size[0] / emb.original_size[0], emb.input_size[1] / emb.original_size[1]
        frame_coords = None if coords is None else (coords - [ox, oy]) * [sx, sy]
        frame_boxes = None
        if boxes is not None:
            h, w = emb.original_size
            frame_boxes = np.clip(boxes - [ox, oy, ox, oy], 0, [w - 1, h - 1, w - 1, h - 1])
            frame_boxes = frame_boxes * [sx, sy, sx, sy]
        logits, scores = self.backend.decode(features, frame_coords, lab, frame_boxes, masks_in,
                                             multimask)
        masks = mask_from_logits(logits, size, emb.input_size, emb.original_size)
        if window is not None:
            full = np.zeros((len(masks), *self.embedding.original_size), bool)
            full[:, window[1]:window[3], window[0]:window[2]] = masks
            masks = full
        return Prediction(masks=masks, scores=scores, low_res_logits=logits[:, 0], window=window)

    def _frame(self, window: Window | None) -> Frame:
        if window is None:
            return Frame(None, self.embedding.input_size, self.embedding.original_size)
        entry = self._window_embedding(window)[0]
        return Frame(window, entry.input_size, entry.original_size)

    def _window_crop(self, window: Window) -> tuple[np.ndarray, Preset, Any]:
        """The window's pixels, preset and bounds (the whole image's intensity range)."""
        image, preset, bounds = self._source
        x0, y0, x1, y1 = window
        return image[y0:y1, x0:x1], preset, bounds

    def _window_ready(self, window: Window | None) -> bool:
        """The window's embedding needs no encoder run (None, the whole image, never does)."""
        if window is None or (self._window is not None
                              and self._window[0] == (self.key, window)):
            return True
        return self.image_key(*self._window_crop(window)) in self.cache

    def window_job(self, window: Window):
        """A call that encodes a zoom window of the current image into the cache (see
        `Prediction.pending`); safe in another thread while this one decodes. It holds the
        window's pixels, so it stays right when the image changes meanwhile."""
        crop, preset, bounds = self._window_crop(window)
        return lambda: self.cache_embedding(crop, preset, bounds)

    def _window_embedding(self, window: Window):
        """(Embedding, backend features) of a window of the current image, encoded once and
        cached like any image (its intensity range is the whole image's)."""
        if self._window is not None and self._window[0] == (self.key, window):
            return self._window[1], self._window[2]
        crop, preset, bounds = self._window_crop(window)
        key = self.image_key(crop, preset, bounds)
        entry = self.cache.get(key)
        if entry is None or entry.original_size != tuple(crop.shape[:2]):
            entry = self.compute_embedding(crop, preset, bounds)
            self.cache.put(key, entry)
        features = self.backend.load_features(entry.features)
        self._window = ((self.key, window), entry, features)
        return entry, features

    def _check_mask_input(self, mask_input) -> np.ndarray | None:
        if mask_input is None:
            return None
        masks_in = np.asarray(mask_input, dtype=np.float32)
        masks_in = masks_in.reshape(-1, 1, *masks_in.shape[-2:])
        if masks_in.shape[-2:] != tuple(self.backend.mask_input_size):
            raise InputError(
                f"mask_input must be the low_res_logits of a previous prediction "
                f"{tuple(self.backend.mask_input_size)}, got {masks_in.shape}."
            )
        return masks_in

    def _check_prompts(self, points, labels, box):
        """Prompts checked in image pixels: (N, K, 2) clicks, (N, K) labels, (N, 4) boxes
        (corners ordered, clipped to the image); None where absent (`checks.prompts`)."""
        return checks.prompts(points, labels, box, self.embedding.original_size)

    def _nothing_to_segment(self, coords, lab, boxes) -> Prediction | None:
        """Empty masks, without asking the model, when there is nothing to segment: a uniform
        image (any mask would be invented) or only negative clicks; None otherwise."""
        note = self.blank or checks.nothing_to_segment(lab, boxes)
        if not note:
            return None
        n = len(boxes) if boxes is not None else len(coords)
        side = tuple(self.backend.mask_input_size)
        return Prediction(masks=np.zeros((n, *self.embedding.original_size), bool),
                          scores=np.zeros(n, np.float32),
                          low_res_logits=np.full((n, *side), EMPTY_LOGIT, np.float32),
                          note=note)
