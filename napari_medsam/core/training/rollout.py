"""Simulated annotation on a batch of cached embeddings: boxes, clicks, box + clicks.

A rollout is what an annotator does to one object: draw a box and/or click, look at the mask,
click again in the largest error region, with the previous low-res logits fed back each time
(exactly as `Session.add_point` does). Every decoder pass of a rollout is a training signal;
passes are decoded in a batch of different images, in the 256 x 256 model frame.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..clicks import interior_point, next_click
from ..zoom import ZoomPolicy, extent_of

MODES = ("box", "clicks", "box+clicks")


def decode_batch(model, features, coords=None, labels=None, boxes=None, mask_input=None):
    """Prompt encoder + mask decoder for B images at once (segment_anything's decoder assumes
    one image); prompts in the model's input frame. Returns (B, 1, S, S) logits of mask 0."""
    pe, dec = model.prompt_encoder, model.mask_decoder
    points = (coords, labels) if coords is not None else None
    sparse, dense = pe(points=points, boxes=boxes, masks=mask_input)
    n = features.shape[0]
    tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
    tokens = torch.cat([tokens[None].expand(n, -1, -1), sparse], dim=1)
    src = features + dense
    pos = pe.get_dense_pe().expand(n, -1, -1, -1)
    b, c, h, w = src.shape
    hs, src = dec.transformer(src, pos, tokens)
    upscaled = dec.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
    hyper = dec.output_hypernetworks_mlps[0](hs[:, 1])  # mask token 0: single-mask output
    b, c, h, w = upscaled.shape
    return (hyper[:, None] @ upscaled.reshape(b, c, h * w)).reshape(b, 1, h, w)


def seg_loss(logits: torch.Tensor, truth: torch.Tensor, valid: torch.Tensor,
             weight: torch.Tensor | None = None) -> torch.Tensor:
    """Dice + BCE over the image area (padding excluded), averaged over the batch (weighted
    per image by `weight` when given)."""
    area = valid.sum(dim=(1, 2, 3)).clamp(min=1.0)
    bce = F.binary_cross_entropy_with_logits(logits, truth, reduction="none")
    bce = (bce * valid).sum(dim=(1, 2, 3)) / area
    prob = torch.sigmoid(logits) * valid
    inter = (prob * truth).sum(dim=(1, 2, 3))
    soft_dice = (2 * inter + 1.0) / (prob.sum(dim=(1, 2, 3)) + truth.sum(dim=(1, 2, 3)) + 1.0)
    if weight is None:
        return (bce + 1.0 - soft_dice).mean()
    return ((bce + 1.0 - soft_dice) * weight).sum() / weight.sum().clamp(min=1.0)


def hard_dice(logits: torch.Tensor, truth: torch.Tensor, valid: torch.Tensor) -> np.ndarray:
    """Per-image Dice of logits > 0 against the truth, inside the image area."""
    pred = (logits > 0) & (valid > 0)
    inter = (pred & (truth > 0)).sum(dim=(1, 2, 3)).float()
    total = (pred.sum(dim=(1, 2, 3)) + (truth > 0).sum(dim=(1, 2, 3))).float()
    out = torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total))
    return out.cpu().numpy()


def whole_image_objects(truth: np.ndarray, valid: np.ndarray, policy: ZoomPolicy) -> np.ndarray:
    """1.0 per object the app decodes on the whole image, 0.0 per object `policy` would zoom on
    (or an empty one); the image is the valid (unpadded) part of the model frame."""
    out = np.zeros(len(truth), np.float32)
    for i, (mask, area) in enumerate(zip(truth, valid, strict=True)):
        extent = extent_of(mask)
        rows, cols = np.nonzero(area.any(axis=1))[0], np.nonzero(area.any(axis=0))[0]
        if extent is None or not len(rows):
            continue
        out[i] = policy.window(extent, (rows[-1] + 1, cols[-1] + 1)) is None
    return out


@dataclass
class Batch:
    """B objects on one device: features (B,256,64,64); truth, valid (B,1,S,S) float."""

    features: torch.Tensor
    truth: torch.Tensor
    valid: torch.Tensor

    @property
    def truth_np(self) -> np.ndarray:
        return self.truth[:, 0].cpu().numpy() > 0

    @property
    def valid_np(self) -> np.ndarray:
        return self.valid[:, 0].cpu().numpy() > 0


def jittered_boxes(truth: np.ndarray, rng: np.random.Generator | None,
                   margin: tuple[int, int] = (0, 12), fixed: float = 5.0) -> np.ndarray:
    """(B, 4) x0, y0, x1, y1 boxes around each mask; each side grown by a random margin in
    `margin` (training) or by `fixed` pixels (validation, like the eval's 5-pixel margin)."""
    out = np.zeros((len(truth), 4))
    side = truth.shape[-1]
    for i, mask in enumerate(truth):
        ys, xs = np.nonzero(mask)
        grow = rng.uniform(*margin, size=4) if rng is not None else np.full(4, fixed)
        out[i] = [xs.min() - grow[0], ys.min() - grow[1], xs.max() + grow[2], ys.max() + grow[3]]
    return np.clip(out, 0, side - 1)


class Rollout:
    """Runs one simulated annotation of a batch and returns Dice per pass.

    Args:
        model: the SamModel (with its adapter active).
        rng: random generator for jittered prompts (None: deterministic, for validation).
        jitter: how far from the deepest point a training click may land (0..1).
        box_context: context for box-only passes, e.g. the base model for a click adapter that
            leaves boxes to the base (then box-only passes are not trained).
        bf16: run trained passes under bfloat16 autocast (about a quarter faster on CPUs with
            AVX-512 BF16, and on GPUs); validation passes always run in float32.
    """

    def __init__(self, model, rng: np.random.Generator | None = None, jitter: float = 0.0,
                 box_margin: tuple[int, int] = (0, 12),
                 box_context: Callable[[], contextlib.AbstractContextManager] | None = None,
                 bf16: bool = False):
        self.model = model
        self.bf16 = bf16
        self.rng = rng
        self.jitter = jitter
        self.box_margin = box_margin
        self.box_context = box_context

    @property
    def trains_box(self) -> bool:
        return self.box_context is None

    def _scale(self, side: int) -> float:
        return self.model.image_size / side  # low-res frame -> encoder input frame

    def run(self, batch: Batch, mode: str, n_clicks: int,
            on_pass: Callable[[torch.Tensor], None] | None = None) -> list[np.ndarray]:
        """Annotate the batch; `on_pass(logits)` sees every pass (e.g. to add a loss).

        Returns:
            One array of per-image Dice per pass (box first for box modes, then each click).
        """
        if mode not in MODES:
            raise ValueError(f"unknown prompt mode {mode}")
        dev = batch.features.device
        truth, valid = batch.truth_np, batch.valid_np
        side = truth.shape[-1]
        scale = self._scale(side)
        boxes = None
        prev = None
        dices = []
        if mode != "clicks":
            box_np = jittered_boxes(truth, self.rng, self.box_margin)
            boxes = torch.from_numpy(box_np * scale).float().to(dev)
            if self.box_context is None:
                prev = self._pass(batch, None, None, boxes, None, on_pass, dices)
            else:
                with self.box_context(), torch.no_grad():
                    prev = self._pass(batch, None, None, boxes, None, None, dices)
        coords = np.zeros((len(truth), 0, 2))
        labels = np.zeros((len(truth), 0), np.int64)
        for _ in range(n_clicks if mode != "box" else 0):
            pred = (prev[:, 0].cpu().numpy() > 0) if prev is not None else np.zeros_like(truth)
            new_xy, new_lab = self._clicks(truth, pred, valid)
            coords = np.concatenate([coords, new_xy[:, None]], axis=1)
            labels = np.concatenate([labels, new_lab[:, None]], axis=1)
            pts = torch.from_numpy(coords * scale).float().to(dev)
            lab = torch.from_numpy(labels).to(dev)
            prev = self._pass(batch, pts, lab, boxes, prev, on_pass, dices)
        return dices

    def _pass(self, batch, pts, lab, boxes, prev, on_pass, dices):
        dev = batch.features.device.type
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=self.bf16 and on_pass is not None):
            logits = decode_batch(self.model, batch.features, pts, lab, boxes, prev).float()
        if on_pass is not None:
            on_pass(logits)
        dices.append(hard_dice(logits.detach(), batch.truth, batch.valid))
        return logits.detach()

    def _clicks(self, truth, pred, valid) -> tuple[np.ndarray, np.ndarray]:
        xy = np.zeros((len(truth), 2))
        lab = np.zeros(len(truth), np.int64)
        for i in range(len(truth)):
            click = next_click(truth[i], pred[i], valid[i], self.rng, self.jitter)
            if click is None:  # already exact: confirm with a positive click inside
                y, x = interior_point(truth[i])
                xy[i], lab[i] = (x, y), 1
            else:
                xy[i], lab[i] = (click.x, click.y), int(click.positive)
        return xy, lab
