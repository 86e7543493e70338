"""napari writer: a Labels layer to NIfTI (in its image file's voxel order and affine) or, for
2D, PNG/TIFF."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np

from ..core.errors import InputError
from ..core.io import ImageData, write_labels
from .reader import geometry_of


def save_labels(path: str | Path, labels_layer) -> Path:
    """Write a Labels layer's data atomically; geometry comes from the layer's metadata (the
    image it was drawn on), else an identity affine.

    Args:
        path: .nii/.nii.gz (any dimensionality) or .png/.tif (2D only).
        labels_layer: a napari Labels layer (or anything with `.data` and `.metadata`).
    """
    data = np.asarray(labels_layer.data)
    if data.ndim not in (2, 3):
        raise InputError(f"Labels with {data.ndim} dimensions cannot be saved; expected 2D or 3D.")
    if data.ndim == 3 and str(path).lower().endswith((".png", ".tif", ".tiff")):
        raise InputError("A PNG or TIFF holds one 2D slice: save a volume as .nii.gz instead.")
    image = geometry_of(labels_layer)
    if image is not None and tuple(image.data.shape[:data.ndim]) == data.shape:
        return image.write_labels(path, data)
    return write_labels(path, data, ImageData(data=data, is_volume=data.ndim == 3))


def napari_write_labels(path: str, data, meta: dict) -> list[str]:
    """npe2 writer entry: (path, data, meta) from napari's save dialog."""
    layer = SimpleNamespace(data=data, metadata=meta.get("metadata") or {})
    return [str(save_labels(path, layer))]
