"""The interface every inference backend implements: numpy in, numpy out.

A backend runs the image encoder (once per image) and the prompt decoder (once per click). The
Predictor keeps the cache, prompt validation and mask mapping; it only talks to this interface,
so torch and onnxruntime are interchangeable and torch need not be imported for ONNX inference.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from .weights import ModelInfo

# Fill value of low-res logits outside a decoded region (`fast` profile): surely background.
OUTSIDE_LOGIT = -20.0


class Backend(ABC):
    """Encoder + decoder runner for one model.

    Attributes:
        name: "torch" or "onnxruntime".
        encoder_variant: "fp32", "fp16" (torch on CUDA) or "int8" (quantized ONNX encoder).
    """

    name: str = ""
    encoder_variant: str = "fp32"
    # (distance, adapter used) of the last decode under an adapter's domain gate, else None
    last_gate: tuple[float, bool] | None = None

    @property
    @abstractmethod
    def info(self) -> ModelInfo:
        """Identity and geometry of the model's weights."""

    @property
    def cache_id(self) -> str:
        """What an embedding from this backend depends on (part of the embedding cache key).

        fp32 encoders give the same embedding (to well below the fp16 precision of the disk
        cache) whatever runs them, so they share the model's id; any other precision is tagged,
        so int8 or fp16 embeddings never mix with fp32 ones.
        """
        base = self.info.cache_id
        return base if self.encoder_variant == "fp32" else f"{base}+{self.encoder_variant}"

    @property
    def image_size(self) -> int:
        return self.info.image_size

    @property
    def mask_input_size(self) -> tuple[int, int]:
        """Side of the low-res logits (and of `mask_input`): 4x the 64x64 embedding."""
        return (256, 256)

    @abstractmethod
    def encode(self, image01: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        """Embed a float32 [0, 1] (H, W, 3) image.

        Returns:
            float32 (256, 64, 64) features and the (h, w) of the resized image in the padding.
        """

    def load_features(self, features: np.ndarray) -> Any:
        """Turn cached numpy features into what `decode` takes (e.g. a tensor on the GPU)."""
        return np.ascontiguousarray(features[None], dtype=np.float32)

    @abstractmethod
    def decode(
        self,
        features: Any,
        coords: np.ndarray | None,
        labels: np.ndarray | None,
        boxes: np.ndarray | None,
        mask_input: np.ndarray | None,
        multimask: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Decode prompts given in the encoder-input frame.

        Args:
            features: from `load_features`.
            coords: (1 or N, K, 2) float x/y; labels: (1 or N, K) 1 positive, 0 negative.
            boxes: (N, 4) x0, y0, x1, y1.
            mask_input: (1 or N, 1, 256, 256) logits of a previous prediction.
            multimask: decode the three candidates and keep the best-scored one per prompt.

        Returns:
            float32 logits (N, 1, 256, 256) and scores (N,).
        """

    def describe(self) -> str:
        """One line for logs and the UI, e.g. "onnxruntime int8 encoder, fp32 decoder"."""
        return f"{self.name} ({self.encoder_variant} encoder)"


def prompt_count(*arrays: np.ndarray | None) -> int:
    """N: the largest leading size among the given prompt arrays."""
    return max(len(a) for a in arrays if a is not None)
