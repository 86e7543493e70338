"""Adapter training on cached embeddings: data, simulated prompts, loop, fine-tune entry point.

    from napari_medsam.core.training import TrainConfig, finetune, from_manifest, split_by_group
    from napari_medsam.core.training import finetune_on_corrections  # a corrections folder
"""

from .data import TrainImage, TrainSet, from_manifest, split_by_group, to_model_frame
from .finetune import finetune, resume_dir
from .loop import Progress, TrainConfig, TrainResult, train, validate
from .on_corrections import MIN_OBJECTS, finetune_on_corrections

__all__ = [
    "MIN_OBJECTS", "Progress", "TrainConfig", "TrainImage", "TrainResult", "TrainSet", "finetune",
    "finetune_on_corrections", "from_manifest", "resume_dir", "split_by_group", "to_model_frame",
    "train", "validate",
]
