"""File > Open Sample: the bundled abdominal CT (TotalSegmentator example, Apache-2.0 / CC BY 4.0).

See resources/sample/ATTRIBUTION.md. The reference labels are TotalSegmentator model output
(a silver standard), offered as a separate sample so the annotation layer starts empty.
"""

from __future__ import annotations

from ..core.volume import read_volume
from ..sample import sample_ct_path, sample_label_names, sample_labels_path
from .reader import META_KEY, LayerData, image_layer_data

SAMPLE_NAME = "sample CT"


def sample_ct() -> list[LayerData]:
    """The sample CT volume (30 axial slices of 3 mm, Hounsfield units)."""
    return [image_layer_data(read_volume(sample_ct_path()), name=SAMPLE_NAME)]


def sample_ct_with_labels() -> list[LayerData]:
    """The sample CT plus TotalSegmentator's labels of 41 structures (model output)."""
    layers = sample_ct()
    volume = layers[0][1]["metadata"][META_KEY]
    kwargs = {
        "name": "TotalSegmentator labels (model output)",
        "scale": layers[0][1]["scale"],
        "opacity": 0.4,
        "metadata": {META_KEY: volume, "label_names": sample_label_names()},
        "visible": False,
    }
    return [*layers, (volume.labels_from_file(sample_labels_path()), kwargs, "labels")]
