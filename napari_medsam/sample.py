"""The bundled sample CT (TotalSegmentator example, see resources/sample/ATTRIBUTION.md)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path


def sample_dir() -> Path:
    return Path(str(resources.files("napari_medsam") / "resources" / "sample"))


def sample_ct_path() -> Path:
    return sample_dir() / "example_ct.nii.gz"


def sample_labels_path() -> Path:
    return sample_dir() / "example_ct_labels.nii.gz"


def sample_label_names() -> dict[int, str]:
    names = json.loads((sample_dir() / "labels.json").read_text())
    return {int(k): v for k, v in names.items()}
