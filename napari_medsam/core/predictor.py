"""Predictor: `set_image` encodes once (through the cache); `predict` only decodes prompts.

Coordinates are (x, y) in original image pixels. Images of any size and aspect ratio are resized
on the longest side and padded, and masks are mapped back exactly to the original grid.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .backends.preprocess import mask_from_logits, upscale_logits
from .embeddings import Embedding, EmbeddingCache, make_key, pixel_hash
from .errors import InputError, NoImageError
from .intensity import Preset, get_preset

if TYPE_CHECKING:  # torch stays unimported on the ONNX path
    from .backends.base import Backend
    from .model import SamModel

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    """Decoder output mapped back to the image.

    masks: bool (N, H, W), one per box (or one for point-only prompts).
    scores: float (N,), the decoder's predicted IoU.
    low_res_logits: float32 (N, 256, 256), feed back as `mask_input` for the next click.
    """

    masks: np.ndarray
    scores: np.ndarray
    low_res_logits: np.ndarray


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
        model: a loaded model, or None for the default LiteMedSAM on the best device.
        cache: an `EmbeddingCache`; a memory-only one is made when None.
        backend: what runs the encoder and decoder (see `core.backends`); default a torch
            backend over `model`. An ONNX backend (`backends.make_backend("balanced")`) runs
            without importing torch.
    """

    def __init__(
        self,
        model: SamModel | None = None,
        cache: EmbeddingCache | None = None,
        backend: Backend | None = None,
    ):
        if backend is None:
            from .backends.torch_backend import TorchBackend
            from .model import default_device, load_model

            backend = TorchBackend(model if model is not None else load_model(
                device=default_device()))
        self.backend = backend
        self.cache = cache if cache is not None else EmbeddingCache()
        self.embedding: Embedding | None = None
        self.key: str | None = None
        self._features: Any = None
        self.encoder_calls = 0

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
        return key

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
        """Make a precomputed embedding current (e.g. from a volume's cache)."""
        self.embedding = entry
        self.key = key
        self._features = self.backend.load_features(entry.features)

    def reset_image(self) -> None:
        self.embedding, self.key, self._features = None, None, None

    @property
    def is_image_set(self) -> bool:
        return self.embedding is not None

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
    ) -> Prediction:
        """Decode prompts on the current image.

        Args:
            points: (K, 2) or (N, K, 2) (x, y) clicks in image pixels.
            labels: (K,) or (N, K): 1 positive, 0 negative.
            box: (4,) or (N, 4) boxes x0, y0, x1, y1 in image pixels; N boxes give N masks.
            mask_input: (256, 256) or (N, 256, 256) logits from a previous prediction.
            multimask: decode three candidates and keep the best-scored one per prompt.
        """
        emb = self.embedding
        if emb is None:
            raise NoImageError("No image is set: call set_image() before predict().")
        coords, lab, boxes = self._prompts_to_input_frame(points, labels, box)
        masks_in = None
        if mask_input is not None:
            masks_in = np.asarray(mask_input, dtype=np.float32)
            masks_in = masks_in.reshape(-1, 1, *masks_in.shape[-2:])
            if masks_in.shape[-2:] != tuple(self.backend.mask_input_size):
                raise InputError(
                    f"mask_input must be the low_res_logits of a previous prediction "
                    f"{tuple(self.backend.mask_input_size)}, got {masks_in.shape}."
                )
        logits, scores = self.decode(coords, lab, boxes, masks_in, multimask)
        emb, size = self.embedding, self.backend.image_size
        masks = mask_from_logits(logits, size, emb.input_size, emb.original_size)
        return Prediction(masks=masks, scores=scores, low_res_logits=logits[:, 0])

    def decode(self, coords, labels, boxes, mask_input, multimask: bool = False):
        """Prompt encoder + mask decoder on input-frame numpy prompts.

        Returns:
            numpy float32 (N, 1, 256, 256) low-res logits and (N,) scores.
        """
        return self.backend.decode(self.features, coords, labels, boxes, mask_input, multimask)

    def upscale(self, logits) -> np.ndarray:
        """(N,1,256,256) low-res logits (numpy or torch) -> (N, H, W) logits on the image grid."""
        if hasattr(logits, "detach"):  # a torch tensor from older callers
            logits = logits.detach().float().cpu().numpy()
        emb = self.embedding
        return upscale_logits(np.asarray(logits), self.backend.image_size, emb.input_size,
                              emb.original_size)

    def _prompts_to_input_frame(self, points, labels, box):
        emb = self.embedding
        h, w = emb.original_size
        sy, sx = emb.input_size[0] / h, emb.input_size[1] / w
        coords = lab = boxes = None
        if points is not None and len(np.asarray(points)) > 0:
            coords = np.asarray(points, dtype=np.float64)
            if coords.shape[-1] != 2 or coords.ndim not in (2, 3):
                raise InputError(f"Points must be (K, 2) x/y pairs, got shape {coords.shape}.")
            if labels is None:
                raise InputError("Each point needs a label: 1 positive, 0 negative.")
            lab = np.asarray(labels, dtype=np.int64).reshape(coords.shape[:-1])
            if not np.isin(lab, (0, 1)).all():
                raise InputError("Point labels must be 1 (positive) or 0 (negative).")
            outside = (coords[..., 0] < -0.5) | (coords[..., 0] > w - 0.5)
            outside |= (coords[..., 1] < -0.5) | (coords[..., 1] > h - 0.5)
            if outside.any():
                raise InputError(
                    f"A point lies outside the image ({w} x {h} pixels): "
                    f"{coords[outside][0].tolist()}."
                )
            coords = coords.reshape(-1 if coords.ndim == 3 else 1, *coords.shape[-2:])
            lab = lab.reshape(coords.shape[:2])
            coords = coords * np.array([sx, sy])
        if box is not None:
            boxes = np.asarray(box, dtype=np.float64).reshape(-1, 4)
            if not np.isfinite(boxes).all():
                raise InputError("A box has a missing (NaN) coordinate.")
            x0, y0 = np.minimum(boxes[:, 0], boxes[:, 2]), np.minimum(boxes[:, 1], boxes[:, 3])
            x1, y1 = np.maximum(boxes[:, 0], boxes[:, 2]), np.maximum(boxes[:, 1], boxes[:, 3])
            if ((x1 <= 0) | (y1 <= 0) | (x0 >= w - 1) | (y0 >= h - 1)).any():
                raise InputError(
                    f"A box lies outside the image ({w} x {h} pixels): draw it over the image."
                )
            if (((x1 - x0) < 1) | ((y1 - y0) < 1)).any():
                raise InputError("A box has no area: drag it wider and taller.")
            boxes = np.stack(
                [np.clip(x0, 0, w - 1), np.clip(y0, 0, h - 1),
                 np.clip(x1, 0, w - 1), np.clip(y1, 0, h - 1)], axis=1,
            ) * np.array([sx, sy, sx, sy])
        if coords is None and boxes is None:
            raise InputError("Give at least one prompt: a box or a point.")
        if coords is not None and boxes is not None and len(coords) not in (1, len(boxes)):
            raise InputError("Give one point set for all boxes, or one per box.")
        return coords, lab, boxes
