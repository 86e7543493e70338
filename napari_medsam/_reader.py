"""napari reader for NIfTI volumes and DICOM series, keeping the geometry as layer metadata.

napari cannot open NIfTI on its own. This reader hands the pixels to an Image layer in the core's
(Z, Y, X) layout with the voxel spacing as the layer scale, and keeps the file's `ImageData`
(affine, header) in `layer.metadata["medsam_image"]`, so label maps saved later overlay the
original scan exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from .core.io import NIFTI_SUFFIXES, ImageData, read_image

META_KEY = "medsam_image"
LayerData = tuple[np.ndarray, dict, str]


def _is_dicom_folder(path: Path) -> bool:
    if not path.is_dir():
        return False
    files = [p for p in path.iterdir() if p.is_file()]
    return any(p.suffix.lower() == ".dcm" for p in files)


def napari_get_reader(path: str | list[str]) -> Callable[[str], list[LayerData]] | None:
    """Return a reader for NIfTI files and DICOM folders, None for anything else."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(path)
    name = p.name.lower()
    if name.endswith(NIFTI_SUFFIXES) or name.endswith(".dcm") or _is_dicom_folder(p):
        return read_layers
    return None


def guess_modality(image: ImageData) -> str:
    """'ct' for Hounsfield-like data (signed values well below -200), else ''."""
    data = image.data
    if data.dtype.kind in "if" and data.size and float(np.nanmin(data)) < -200:
        return "ct"
    return ""


def image_layer_data(image: ImageData, name: str | None = None) -> LayerData:
    """(data, kwargs, "image") for napari, with spacing as scale and geometry in metadata."""
    data = image.data
    rgb = (not image.is_volume) and data.ndim == 3 and data.shape[-1] in (3, 4)
    ndim = data.ndim - (1 if rgb else 0)
    spacing = tuple(float(s) for s in image.spacing)[-ndim:]
    if len(spacing) != ndim or not all(np.isfinite(spacing)) or min(spacing) <= 0:
        spacing = (1.0,) * ndim
    if image.is_volume:
        spacing = tuple(s * f for s, f in zip(spacing, radiological_flips(image.affine),
                                               strict=True))
    kwargs: dict = {
        "name": name or Path(image.path).name.split(".")[0] or "image",
        "scale": spacing,
        "rgb": rgb,
        "metadata": {META_KEY: image, "affine": image.affine, "modality": guess_modality(image)},
    }
    if guess_modality(image) == "ct" and not rgb:
        kwargs["contrast_limits"] = [-160.0, 240.0]  # soft-tissue window (level 40, width 400)
    return data, kwargs, "image"


def radiological_flips(affine: np.ndarray) -> tuple[int, int, int]:
    """Signs for the (Z, Y, X) display scale that show axial slices the radiological way.

    Columns go toward the patient's left and rows toward posterior (patient's right on the
    screen's left, anterior at the top), whatever the file's voxel order; the pixels and the
    saved labels keep the file's own layout, only the view is mirrored.
    """
    try:
        import nibabel as nib

        codes = nib.aff2axcodes(np.asarray(affine, dtype=float))
    except Exception:  # a degenerate affine: show as stored
        return 1, 1, 1
    rows = -1 if codes[1] in ("A", "S") else 1  # anterior (axial) / superior (other) on top
    cols = -1 if codes[0] in ("R", "A") else 1  # patient's right (or front) on the left
    return 1, rows, cols


def read_layers(path: str | list[str]) -> list[LayerData]:
    """Read one NIfTI file or DICOM series into an Image layer."""
    if isinstance(path, list):
        path = path[0]
    return [image_layer_data(read_image(path))]


def image_data_of(layer, data: np.ndarray | None = None) -> ImageData:
    """The geometry of a layer (from the reader or sample metadata) around `data`.

    Layers opened another way (a PNG, a numpy array) get an identity affine.
    """
    meta = getattr(layer, "metadata", None) or {}
    src = meta.get(META_KEY)
    data = np.asarray(layer.data if data is None else data)
    if isinstance(src, ImageData):
        return ImageData(
            data=data, affine=src.affine, is_volume=src.is_volume, path=src.path,
            spacing=src.spacing, header=src.header,
        )
    affine = np.asarray(meta.get("affine", np.eye(4)), dtype=float)
    is_volume = data.ndim == 3 and not getattr(layer, "rgb", False) and data.shape[-1] not in (3, 4)
    return ImageData(data=data, affine=affine, is_volume=is_volume)
