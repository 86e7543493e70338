"""Training sets for adapters: objects (image + label) whose embeddings are in the cache.

Everything is kept in the model's 256 x 256 input frame (the image resized on its longest side
and padded), where the decoder's low-res logits live, so a training step never touches the
original image grid. Only label maps (uint8) stay in memory; embeddings are read from the
`EmbeddingCache` (memory LRU + disk) when a batch needs them.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..embeddings import EmbeddingCache
from ..errors import CancelledError, InputError
from ..evaluation import load_pair, select_pairs
from ..intensity import Preset, suggest_preset

ProgressFn = Callable[[int, int], None]


@dataclass
class TrainImage:
    """One 2D image (or volume slice) with its labels in the model frame."""

    key: str  # embedding cache key
    labels: np.ndarray  # uint8 (S, S) label map in the padded model frame, 0 = background
    input_size: tuple[int, int]  # (h, w) of the image inside the padding
    group: str  # patient / case: validation splits never cut a group in two
    dataset: str
    source: str = ""  # image file (and slice) it came from


@dataclass
class TrainSet:
    """Images and the objects (image index, label) to learn from."""

    images: list[TrainImage] = field(default_factory=list)
    objects: list[tuple[int, int]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.objects)

    def add(self, image: TrainImage) -> None:
        self.images.append(image)
        for label in np.unique(image.labels)[1:]:
            self.objects.append((len(self.images) - 1, int(label)))

    def subset(self, groups: set[str]) -> TrainSet:
        out = TrainSet()
        for image in self.images:
            if image.group in groups:
                out.add(image)
        return out

    @property
    def groups(self) -> list[str]:
        return sorted({im.group for im in self.images})

    def truth(self, index: int) -> np.ndarray:
        """bool (S, S) mask of object `index`."""
        i, label = self.objects[index]
        return self.images[i].labels == label

    def valid(self, index: int) -> np.ndarray:
        """bool (S, S): the image area (not padding) of object `index`."""
        im = self.images[self.objects[index][0]]
        out = np.zeros(im.labels.shape, bool)
        out[: im.input_size[0], : im.input_size[1]] = True
        return out


def resized_size(shape: tuple[int, int], side: int) -> tuple[int, int]:
    """(h, w) of an image of `shape` resized on its longest side to `side` (as the model does)."""
    h, w = shape
    scale = side / max(h, w)
    return max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))


def to_model_frame(labels: np.ndarray, side: int = 256) -> tuple[np.ndarray, tuple[int, int]]:
    """Nearest-neighbour resize of a (H, W) label map into the padded (side, side) frame."""
    labels = np.asarray(labels)
    h, w = resized_size(labels.shape[:2], side)
    rows = np.minimum(((np.arange(h) + 0.5) * labels.shape[0] / h).astype(int), labels.shape[0] - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * labels.shape[1] / w).astype(int), labels.shape[1] - 1)
    out = np.zeros((side, side), np.uint8)
    out[:h, :w] = labels[rows][:, cols]
    return out, (h, w)


def split_by_group(data: TrainSet, val_fraction: float = 0.2,
                   seed: int = 0) -> tuple[TrainSet, TrainSet]:
    """Split into (train, validation) by patient/case so no patient is in both.

    Objects of one patient only (e.g. slices of one volume) are split by image instead:
    neighbouring slices look alike, so that validation is optimistic, but it still exists.
    """
    if len(data.groups) < 2 and len({im.key for im in data.images}) >= 2:
        regrouped = TrainSet()
        for im in data.images:
            regrouped.add(replace(im, group=f"{im.group}#{im.key[:12]}"))
        data = regrouped
    groups = data.groups
    if len(groups) < 2:
        raise InputError("Validation needs images of at least two patients/cases; add more.")
    rng = np.random.default_rng(seed)
    order = [groups[i] for i in rng.permutation(len(groups))]
    n_val = min(len(groups) - 1, max(1, int(round(val_fraction * len(groups)))))
    return data.subset(set(order[n_val:])), data.subset(set(order[:n_val]))


def ensure_embedding(predictor, image: np.ndarray, preset: Preset, bounds,
                     encode: bool) -> str | None:
    """Cache key of the image's embedding; encodes it when missing and `encode` is true."""
    key = predictor.image_key(image, preset, bounds)
    if key in predictor.cache:
        return key
    if not encode:
        return None
    predictor.set_image(image, preset, bounds)
    return key


def from_manifest(
    data_dir: str | Path,
    predictor,
    datasets: list[str] | None = None,
    max_slices: int | None = None,
    encode_missing: bool = True,
    cases: list[str] | None = None,
    progress: ProgressFn | None = None,
    cancel: Callable[[], bool] | None = None,
    zoom=None,
    zoom_per_image: int = 1,
    seed: int = 0,
) -> TrainSet:
    """Every labelled 2D image and volume slice of a manifest folder, with cached embeddings.

    Args:
        datasets: only these dataset names (default: all).
        max_slices: for volumes, at most this many labelled slices per volume, evenly spread.
        cases: only pairs of these cases (patients).
        encode_missing: run the encoder for images not in the cache (else skip them).
        zoom: a `zoom.ZoomPolicy`: also add the windows the predictor's zoom would show around
            up to `zoom_per_image` small objects per image (`zoom_crops`), as dataset
            "<name>+zoom" (its own sampling weight).
    """
    from .zoom_crops import crop_windows

    data_dir = Path(data_dir)
    pairs = [p for p in select_pairs(data_dir, datasets) if not cases or p["case"] in cases]
    side = int(predictor.model.prompt_encoder.mask_input_size[0])  # low-res logits grid
    out = TrainSet()
    for n, pair in enumerate(pairs):
        if cancel is not None and cancel():
            raise CancelledError(f"Reading training images cancelled after {n} of {len(pairs)}.")
        img, gt = load_pair(data_dir, pair)  # volumes as axial slices, like every verb
        preset = suggest_preset(img.data, pair.get("modality", ""))
        if img.is_volume:
            bounds = preset.bounds(img.data)
            zs = np.nonzero(gt.reshape(gt.shape[0], -1).any(axis=1))[0]
            if max_slices is not None and len(zs) > max_slices:
                zs = zs[np.linspace(0, len(zs) - 1, max_slices).round().astype(int)]
            items = [(img.data[z], gt[z], bounds, f"{pair['image']}#{z}") for z in zs]
        else:
            items = [(img.data, gt, None, pair["image"])]
        group = f"{pair['dataset']}/{pair['case']}"
        for image, labels, bounds, source in items:
            key = ensure_embedding(predictor, image, preset, bounds, encode_missing)
            if key is None:
                continue
            frame, size = to_model_frame(labels, side)
            if frame.any():
                out.add(TrainImage(key, frame, size, group, pair["dataset"], source))
            if zoom is None:
                continue
            whole = bounds if bounds is not None else preset.bounds(image)  # as the predictor
            # each image its own draws: its windows (and their cached embeddings) stay the
            # same whichever other images a run includes or finds in the cache
            rng = np.random.default_rng([seed, zlib.crc32(source.encode())])
            for crop, crop_labels, window in crop_windows(image, labels, zoom, rng,
                                                          zoom_per_image):
                key = ensure_embedding(predictor, crop, preset, whole, encode_missing)
                if key is not None:
                    frame, size = to_model_frame(crop_labels, side)
                    out.add(TrainImage(key, frame, size, group, f"{pair['dataset']}+zoom",
                                       f"{source}@{window}"))
        if progress is not None:
            progress(n + 1, len(pairs))
    return out


def cached_features(cache: EmbeddingCache, key: str) -> np.ndarray:
    """(256, 64, 64) float32 features of a cached embedding, or a clear error."""
    entry = cache.get(key)
    if entry is None:
        raise InputError(f"The embedding {key[:12]}... is no longer in the cache; rebuild the "
                         "training set (it re-encodes missing images).")
    return entry.features


def describe(data: TrainSet) -> dict:
    """Counts per dataset, for metadata and logs."""
    per: dict[str, dict[str, int]] = {}
    for i, _ in data.objects:
        d = per.setdefault(data.images[i].dataset, {"objects": 0})
        d["objects"] += 1
    for im in data.images:
        per[im.dataset]["images"] = per[im.dataset].get("images", 0) + 1
    return json.loads(json.dumps(per))
