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
from skimage.measure import label as cc_label
from skimage.measure import regionprops

from ..embeddings import Embedding
from .heads import HeadOutput

LOW_RES = 256  # side of the decoder's low-res logits (4x the 64x64 embedding)


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


def frame_size(emb: Embedding, image_size: int, side: int = LOW_RES) -> tuple[int, int]:
    """(h, w) of the image inside a `side` x `side` grid of the padded input square."""
    h, w = emb.input_size
    return max(1, round(h * side / image_size)), max(1, round(w * side / image_size))


def to_grid(label_map: np.ndarray, structures: list[int], emb: Embedding, image_size: int,
            side: int = LOW_RES) -> torch.Tensor:
    """Per-structure foreground fraction (S, side, side) of a label map, on the padded grid."""
    onehot = np.stack([label_map == v for v in structures]).astype(np.float32)
    h, w = frame_size(emb, image_size, side)
    x = torch.from_numpy(onehot)[None]
    x = F.interpolate(x, (h, w), mode="bilinear", align_corners=False, antialias=True)
    return F.pad(x[0], (0, side - w, 0, side - h)).clamp(0, 1)


def to_image(logits: torch.Tensor, emb: Embedding, image_size: int) -> torch.Tensor:
    """(N, 256, 256) low-res logits -> (N, H, W) logits on the original image grid."""
    x = logits[:, None].float()
    h, w = frame_size(emb, image_size, x.shape[-1])
    x = x[..., :h, :w]
    return F.interpolate(x, emb.original_size, mode="bilinear", align_corners=False)[:, 0]


def merge_structures(logits: np.ndarray, values: list[int], keep_largest: bool) -> np.ndarray:
    """(S, H, W) logits -> uint16 label map: each pixel takes the most confident positive one.

    With `keep_largest`, each structure keeps only its largest connected region (anatomy such as
    a heart chamber is one region; stray specks are dropped).
    """
    best = logits.argmax(axis=0)
    positive = logits.max(axis=0) > 0
    out = np.zeros(logits.shape[1:], dtype=np.uint16)
    for i, value in enumerate(values):
        mask = positive & (best == i)
        if keep_largest and mask.any():
            comps = cc_label(mask, connectivity=1)
            mask = comps == (np.bincount(comps.ravel())[1:].argmax() + 1)
        out[mask] = value
    return out


def find_objects(prob: np.ndarray, emb: Embedding, image_size: int,
                 threshold: float = 0.5) -> list[dict]:
    """Separate objects of a head's low-res maps: one box and one point per connected region.

    Args:
        prob: (S, g, g) foreground probabilities on the padded input grid.

    Returns:
        Dicts {"structure": index, "box": (x0, y0, x1, y1), "point": (x, y), "score": mean
        probability} in original image pixels, ready for the predictor's box/point prompts.
    """
    g = prob.shape[-1]
    oh, ow = emb.original_size
    gh, gw = frame_size(emb, image_size, g)
    sy, sx = oh / (gh * 1.0), ow / (gw * 1.0)  # original pixels per grid cell
    found = []
    for s, p in enumerate(prob):
        comps = cc_label(p[:gh, :gw] > threshold, connectivity=2)
        for region in regionprops(comps, intensity_image=p[:gh, :gw]):
            y0, x0, y1, x1 = region.bbox
            cy, cx = np.unravel_index(np.argmax(np.where(comps == region.label, p[:gh, :gw], 0)),
                                      (gh, gw))
            found.append({
                "structure": s,
                "box": (max(0.0, x0 * sx), max(0.0, y0 * sy),
                        min(ow - 1.0, x1 * sx), min(oh - 1.0, y1 * sy)),
                "point": (min(ow - 1.0, (cx + 0.5) * sx), min(oh - 1.0, (cy + 0.5) * sy)),
                "score": float(region.intensity_mean),
            })
    return found
