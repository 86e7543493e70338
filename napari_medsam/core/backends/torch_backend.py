"""The torch backend: the reference fp32 path on the CPU, and the GPU path when torch sees one.

On CUDA, 1024 px ViT-B encoders (SAM, MedSAM) run under fp16 autocast (autocast keeps softmax
and normalisation in fp32, which is what makes fp16 safe): 2.0x faster on an H200. LiteMedSAM's
small TinyViT stays fp32 there: one slice at a time is launch-bound and fp16 was slower (7.5 vs
6.3 ms) with slightly lower mask agreement (benchmarks/bench_cuda.py, docs/performance.md).
fp16 embeddings are returned as float32 and their cache id is tagged "+fp16" so they never mix
with fp32 ones. The decoder stays fp32: it is small, and its logits feed back into the next click.
"""

from __future__ import annotations

import numpy as np
import torch

from ..adapters import routed
from .base import Backend, prompt_count
from .preprocess import prepare_input
from .weights import ModelInfo

HALF_MIN_INPUT = 1024  # encoder input side from which fp16 autocast pays on a GPU


def default_half(model) -> bool:
    """fp16 encoder autocast by default: on a GPU, for the large (1024 px) encoders only."""
    return model.device.type == "cuda" and model.image_size >= HALF_MIN_INPUT


class TorchBackend(Backend):
    """Runs a loaded `SamModel` with torch.

    Args:
        model: the model (its device decides CPU or GPU).
        half: fp16 encoder autocast; default: on CUDA for 1024 px encoders, else off.
    """

    name = "torch"

    def __init__(self, model, half: bool | None = None):
        self.model = model
        self.half = default_half(model) if half is None else bool(half)

    @property
    def encoder_variant(self) -> str:  # type: ignore[override]
        return "fp16" if self.half else "fp32"

    @property
    def info(self) -> ModelInfo:
        return ModelInfo.from_model(self.model)

    @property
    def cache_id(self) -> str:
        base = self.model.cache_id  # follows encoder adapters swapped in at run time
        return f"{base}+fp16" if self.half else base

    @property
    def last_gate(self) -> tuple[float, bool] | None:  # type: ignore[override]
        found = getattr(getattr(self.model, "adapters", None), "last_gate", None)
        return (found[1], found[2]) if found else None

    @property
    def image_size(self) -> int:
        return self.model.image_size

    @property
    def mask_input_size(self) -> tuple[int, int]:
        return tuple(self.model.prompt_encoder.mask_input_size)

    @torch.no_grad()
    def encode(self, image01: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        x, resized = prepare_input(image01, self.model.image_size, self.model.normalization)
        x = torch.from_numpy(x).to(self.model.device)
        if self.half:
            with torch.autocast(self.model.device.type, dtype=torch.float16):
                features = self.model.image_encoder(x)
        else:
            features = self.model.image_encoder(x)
        return features[0].float().cpu().numpy(), resized

    def load_features(self, features: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(features, dtype=np.float32))[None].to(self.model.device)

    @torch.no_grad()
    def decode(self, features, coords, labels, boxes, mask_input, multimask=False):
        model, dev = self.model, self.model.device
        pts = None
        if coords is not None:
            pts = (torch.from_numpy(coords).float().to(dev), torch.from_numpy(labels).to(dev))
        boxes_t = torch.from_numpy(boxes).float().to(dev) if boxes is not None else None
        masks_t = torch.from_numpy(mask_input).to(dev) if mask_input is not None else None
        n = prompt_count(coords, boxes, mask_input)
        if pts is not None and len(pts[0]) != n:
            pts = (pts[0].expand(n, -1, -1), pts[1].expand(n, -1))
        if masks_t is not None and len(masks_t) != n:
            masks_t = masks_t.expand(n, -1, -1, -1)
        # click adapter: boxes stay base; a fine-tuned adapter's gate may refuse this image
        with routed(model, has_points=pts is not None, features=features):
            sparse, dense = model.prompt_encoder(points=pts, boxes=boxes_t, masks=masks_t)
            logits, iou = model.mask_decoder(
                image_embeddings=features,
                image_pe=model.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask,
            )
        if multimask:
            best = iou.argmax(dim=1)
            idx = torch.arange(len(best), device=best.device)
            logits, iou = logits[idx, best][:, None], iou[idx, best][:, None]
        return logits.float().cpu().numpy(), iou[:, 0].float().cpu().numpy()

    def describe(self) -> str:
        where = "GPU" if self.model.device.type == "cuda" else "CPU"
        return f"torch on {where} ({self.encoder_variant} encoder, fp32 decoder)"
