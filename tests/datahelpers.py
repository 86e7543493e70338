"""Helpers for tests on the real dev data (importable as `datahelpers`; conftest is not,
since tests/slicer has its own conftest)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def load_pair(data_dir: Path, pair: dict):
    """(image, label map) of one manifest pair, in core layout."""
    from napari_medsam.core.io import read_image

    image = read_image(data_dir / pair["image"]).data
    labels = np.asarray(read_image(data_dir / pair["mask"]).data)
    return image, labels
