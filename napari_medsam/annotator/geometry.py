"""Geometry between napari layers and the core: image arrays, boxes as shape vertices."""

from __future__ import annotations

import numpy as np

from ..core.errors import InputError


def image_array(layer) -> tuple[np.ndarray, bool]:
    """(pixels as numpy, is_volume) of an Image layer; raises InputError for other shapes."""
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    data = np.asarray(data)
    if getattr(layer, "rgb", False):
        if data.ndim != 3:
            raise InputError(f"'{layer.name}' is a colour stack {data.shape}: MedSAM segments one "
                             "2D colour image at a time.")
        return data, False
    if data.ndim not in (2, 3):
        raise InputError(f"'{layer.name}' has {data.ndim} dimensions {data.shape}: MedSAM works on "
                         "a 2D image or a 3D volume (slices, rows, columns).")
    return data, data.ndim == 3


def bounds(verts: np.ndarray) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) around a shape's vertices (last two coordinates are row, column)."""
    verts = np.asarray(verts)
    ys, xs = verts[:, -2], verts[:, -1]
    return float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())


def rect(box, z: int | None) -> np.ndarray:
    """The 4 corners of an (x0, y0, x1, y1) box as napari vertices, on slice z for a volume."""
    x0, y0, x1, y1 = box
    rect = np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], dtype=float)
    return rect if z is None else np.column_stack([np.full(4, float(z)), rect])
