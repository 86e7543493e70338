"""napari reader for NIfTI volumes and DICOM series, in the core's one volume frame.

napari cannot open NIfTI on its own. A volume is handed to napari as `core.volume.open_image`
slices it for every verb: axial slices shown the radiological way (anterior at the top, the
patient's right on the left), whatever the file's voxel order, with the voxel spacing as the
layer scale. So a slice number and pixel coordinates mean in napari what they mean in the CLI,
and embeddings cached by `napari-medsam embed` are found again here. The `Volume` (its file and
the reorientation back to it) is kept in `layer.metadata["medsam_image"]`, so label maps saved
later are written in the file's own voxel order with its affine.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..core.io import NIFTI_SUFFIXES, ImageData
from ..core.volume import Volume, open_image

META_KEY = "medsam_image"
LayerData = tuple[np.ndarray, dict, str]


def _is_dicom_folder(path: Path) -> bool:
    if not path.is_dir():
        return False
    return any(p.is_file() and p.suffix.lower() == ".dcm" for p in path.iterdir())


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


def guess_modality(data: np.ndarray) -> str:
    """'ct' for Hounsfield-like data (signed values well below -200), else ''."""
    if data.dtype.kind in "if" and data.size and float(np.nanmin(data)) < -200:
        return "ct"
    return ""


def image_layer_data(image: Volume | ImageData, name: str | None = None) -> LayerData:
    """(data, kwargs, "image") for napari, with spacing as scale and geometry in metadata."""
    data = image.data
    rgb = (not image.is_volume) and data.ndim == 3 and data.shape[-1] in (3, 4)
    ndim = data.ndim - (1 if rgb else 0)
    spacing = tuple(float(s) for s in image.spacing)[-ndim:]
    if len(spacing) != ndim or not all(np.isfinite(spacing)) or min(spacing) <= 0:
        spacing = (1.0,) * ndim
    source = image.source if isinstance(image, Volume) else image
    modality = guess_modality(data)
    kwargs: dict = {
        "name": name or Path(source.path).name.split(".")[0] or "image",
        "scale": spacing,
        "rgb": rgb,
        "metadata": {META_KEY: image, "modality": modality},
    }
    if modality == "ct" and not rgb:
        kwargs["contrast_limits"] = [-160.0, 240.0]  # soft-tissue window (level 40, width 400)
    return data, kwargs, "image"


def read_layers(path: str | list[str]) -> list[LayerData]:
    """Read one NIfTI file or DICOM series into an Image layer."""
    if isinstance(path, list):
        path = path[0]
    return [image_layer_data(open_image(path))]


def geometry_of(layer) -> Volume | ImageData | None:
    """The image a layer came from (reader or sample), or None for layers opened another way."""
    found = (getattr(layer, "metadata", None) or {}).get(META_KEY)
    return found if isinstance(found, Volume | ImageData) else None
