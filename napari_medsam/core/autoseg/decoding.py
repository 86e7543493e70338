"""Run the frozen SAM mask decoder on head prompts, and map between the image and the 256 grid.

`segment_anything`'s MaskDecoder repeats one image embedding for all prompts; training needs a
batch of images, each with one prompt per structure, so `decode_heads` runs the same decoder
modules on (image, structure) pairs directly. The decoder's weights are never changed.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F

from ..embeddings import Embedding
from .heads import HeadOutput
from .objects import LOW_RES, frame_size


def decode_heads(model, embeddings: torch.Tensor, out: HeadOutput,
                 which: torch.Tensor | None = None) -> torch.Tensor:
    """Decode structures of images with the head's prompts; logits on the 256 grid.

    Args:
        embeddings: (B, 256, 64, 64) image embeddings.
        out: the head's output for these embeddings.
        which: (B,) one structure index per image (training samples one to save time), or None
            for every structure of every image.

    Returns:
        (B, S, 256, 256) logits, or (B, 1, 256, 256) with `which`. Uses mask token 0 (LiteMedSAM
        decodes with multimask_output=False). Gradients flow back to the head's prompts through
        the (frozen) decoder when autograd is on.
    """
    from ..adapters import base_only

    # heads are trained on, and run with, the base decoder (not e.g. the click adapter's)
    with base_only(model):
        return _decode(model, embeddings, out, which)


def _decode(model, embeddings, out: HeadOutput, which) -> torch.Tensor:
    dec = model.mask_decoder
    b, s = out.dense.shape[:2]
    if which is None:
        img = torch.arange(b, device=embeddings.device).repeat_interleave(s)
        sel = torch.arange(s, device=embeddings.device).repeat(b)
    else:
        img, sel = torch.arange(b, device=embeddings.device), which
    n = len(img)
    src = embeddings[img] + out.dense[img, sel]
    pos = model.prompt_encoder.get_dense_pe().to(src.dtype).expand(n, -1, -1, -1)
    own = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
    tokens = torch.cat([own.unsqueeze(0).expand(n, -1, -1), out.tokens[img, sel]], dim=1)
    hs, src = dec.transformer(src, pos, tokens)
    c, h, w = src.shape[-1], *embeddings.shape[-2:]
    up = dec.output_upscaling(src.transpose(1, 2).reshape(n, c, h, w))
    hyper = dec.output_hypernetworks_mlps[0](hs[:, 1, :])  # mask token 0
    masks = (hyper.unsqueeze(1) @ up.flatten(2)).view(n, *up.shape[-2:])
    return masks.view(b, -1, *masks.shape[-2:])


@contextmanager
def frozen(module: torch.nn.Module):
    """Turn off parameter gradients of `module` for the block, then restore them as they were."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def to_grid(label_map: np.ndarray, structures: list[int], emb: Embedding, image_size: int,
            side: int = LOW_RES) -> torch.Tensor:
    """Per-structure foreground fraction (S, side, side) of a label map, on the padded grid."""
    onehot = np.stack([label_map == v for v in structures]).astype(np.float32)
    h, w = frame_size(emb, image_size, side)
    x = torch.from_numpy(onehot)[None]
    x = F.interpolate(x, (h, w), mode="bilinear", align_corners=False, antialias=True)
    return F.pad(x[0], (0, side - w, 0, side - h)).clamp(0, 1)
