"""One-click automatic segmentation: small heads on the image embedding that prompt the decoder.

- heads.py: the two nn.Modules (ESP-MedSAM patch-prompt generator, TiPE-SAM shape experts).
- decoding.py: frozen torch decoder on head prompts (training); objects.py: numpy geometry,
  separate objects, merging structures.
- data.py: labelled examples (cached embedding + ground truth) from folders or arrays.
- train.py: the small two-phase training loop. evaluate.py: Dice per structure and mode.
- infer.py: run a head on the current image -> label map (torch-free on an ONNX backend).
- store.py: find/load heads (torch-free); torch_run.py: the torch side (load, run, save, export).
- volume.py: a volume as a volume (islands and end slivers dropped, gaps filled, ends tried).

Names are imported on first use, so `from napari_medsam.core.autoseg import load_head` does not
import torch (the light install runs heads with onnxruntime).
"""

from __future__ import annotations

import importlib

_WHERE = {
    "Example": "data", "list_pairs": "data", "load_examples": "data", "make_example": "data",
    "pick_pairs": "data", "evaluate_head": "evaluate", "mean_dice": "evaluate",
    "KINDS": "heads", "PatchPromptHead": "heads", "ShapeExpertHead": "heads",
    "MODES": "infer", "AutoHead": "infer", "AutoResult": "infer",
    "segment_embedding": "infer", "list_heads": "store", "load_head": "store",
    "resolve_head": "store", "save_head": "torch_run", "HeadTrainConfig": "train",
    "segment_volume": "volume",
    "HeadTrainResult": "train", "train_head": "train",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
