"""The two automatic-segmentation heads: small nn.Modules on the frozen 256x64x64 image embedding.

Both turn an embedding into, per structure, (a) a low-resolution map the head is supervised on
directly and (b) a dense prompt (256 channels at 64x64) plus one learned query token that the
frozen SAM mask decoder consumes in place of a click or box, so the decoder draws every structure
with no prompt from the user.

- `PatchPromptHead`: ESP-MedSAM's self-patch prompt generator. Patch merging (2x2 stride-2 conv +
  LayerNorm) predicts a patch-level foreground probability per structure (targets: max-pooled
  ground truth, BCE); the probabilities are upsampled and projected by a 1x1 conv to the prompt.
- `ShapeExpertHead`: TiPE-SAM's mixture of shape experts. A learned dictionary of K low-resolution
  shape templates per structure and a pixel-wise gating network on the embedding mix them into a
  shape map, re-encoded by a small conv into a dense structural prompt.

The prompt projections start at zero with the decoder's own "no mask" embedding as bias, so an
untrained head gives exactly the decoder's empty-prompt output (like LoRA's zero-initialised B).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from segment_anything.modeling.common import LayerNorm2d
from torch import nn

EMBED_DIM = 256
EMBED_SIDE = 64
EMBED_STRIDE = 4  # input pixels (256 frame) per embedding cell
KINDS = ("patch", "shape")


class HeadOutput:
    """What a head hands to the decoder and to its own loss.

    Attributes:
        lowres: (B, S, g, g) logits of the head's own map (patch map or shape map).
        dense: (B, S, 256, 64, 64) dense prompt embedding per structure.
        tokens: (B, S, 1, 256) learned query token per structure (sparse prompt).
    """

    def __init__(self, lowres: torch.Tensor, dense: torch.Tensor, tokens: torch.Tensor):
        self.lowres, self.dense, self.tokens = lowres, dense, tokens


class _PromptProjection(nn.Module):
    """Project S low-res maps (upsampled to 64x64) to S dense prompts; starts at 'no mask'."""

    def __init__(self, n_structures: int, in_channels: int, no_mask_embed: torch.Tensor | None):
        super().__init__()
        s = n_structures
        self.proj = nn.Conv2d(in_channels, s * EMBED_DIM, 1)
        nn.init.zeros_(self.proj.weight)
        bias = torch.zeros(EMBED_DIM) if no_mask_embed is None else no_mask_embed.reshape(-1)
        with torch.no_grad():
            self.proj.bias.copy_(bias.detach().float().repeat(s))
        self.tokens = nn.Parameter(torch.randn(s, 1, EMBED_DIM) * 0.02)
        self.n_structures = s

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = features.shape[0]
        if features.shape[-1] != EMBED_SIDE:
            features = F.interpolate(features, (EMBED_SIDE, EMBED_SIDE), mode="bilinear",
                                     align_corners=False)
        dense = self.proj(features).view(b, self.n_structures, EMBED_DIM, EMBED_SIDE, EMBED_SIDE)
        return dense, self.tokens.unsqueeze(0).expand(b, -1, -1, -1)


class PatchPromptHead(nn.Module):
    """Self-patch prompt generator (ESP-MedSAM, Sec. 3.3).

    Args:
        n_structures: output channels, one per structure.
        patch_size: patch side in pixels of the 256 input frame (8, 16, 32 or 64): each
            2x2 stride-2 merging layer doubles the patch from one 4-pixel embedding cell.
        hidden: channels of the patch generator.
        no_mask_embed: the decoder's "no mask" embedding (bias of the 1x1 projection).
    """

    kind = "patch"

    def __init__(self, n_structures: int, patch_size: int = 16, hidden: int = 64,
                 no_mask_embed: torch.Tensor | None = None):
        super().__init__()
        levels = math.log2(patch_size / EMBED_STRIDE)
        if patch_size < 2 * EMBED_STRIDE or levels != int(levels) or patch_size > 64:
            raise ValueError(f"patch size must be 8, 16, 32 or 64 pixels, got {patch_size}")
        layers: list[nn.Module] = []
        c_in = EMBED_DIM
        for _ in range(int(levels)):
            layers += [nn.Conv2d(c_in, hidden, 2, stride=2), LayerNorm2d(hidden), nn.GELU()]
            c_in = hidden
        # one 3x3 context layer at patch level: tells the LV from the LA by what lies around it
        layers += [nn.Conv2d(hidden, hidden, 3, padding=1), LayerNorm2d(hidden), nn.GELU(),
                   nn.Conv2d(hidden, n_structures, 1)]
        self.generator = nn.Sequential(*layers)
        self.prompt = _PromptProjection(n_structures, n_structures, no_mask_embed)
        self.config = {"kind": self.kind, "n_structures": n_structures,
                       "patch_size": patch_size, "hidden": hidden}

    @property
    def grid(self) -> int:
        return EMBED_SIDE * EMBED_STRIDE // self.config["patch_size"]

    def forward(self, embedding: torch.Tensor) -> HeadOutput:
        """(B, 256, 64, 64) embedding -> patch logits (B, S, g, g) and per-structure prompts."""
        logits = self.generator(embedding)
        dense, tokens = self.prompt(torch.sigmoid(logits))
        return HeadOutput(logits, dense, tokens)


class ShapeExpertHead(nn.Module):
    """Mixture-of-shape-experts prior (TiPE-SAM).

    Args:
        n_structures: output channels, one per structure.
        experts: K, the number of shape templates per structure.
        template_size: side of the low-resolution templates (and of the shape map).
        gate_size: side of the pixel-wise gating map (the template side by default; a coarser
            gate makes each gate pick whole shapes, which validated worse on CAMUS).
        hidden: channels of the gating network and of the re-encoder.
        no_mask_embed: the decoder's "no mask" embedding (bias of the re-encoder's last conv).
    """

    kind = "shape"

    def __init__(self, n_structures: int, experts: int = 8, template_size: int = 32,
                 gate_size: int = 32, hidden: int = 64,
                 no_mask_embed: torch.Tensor | None = None):
        super().__init__()
        if EMBED_SIDE % gate_size or template_size % gate_size:
            raise ValueError("gate_size must divide 64 and the template size")
        s, k = n_structures, experts
        self.templates = nn.Parameter(torch.randn(k, s, template_size, template_size) * 0.1)
        self.gate = nn.Sequential(
            nn.Conv2d(EMBED_DIM, hidden, 1), LayerNorm2d(hidden), nn.GELU(),
            nn.AvgPool2d(EMBED_SIDE // gate_size),
            nn.Conv2d(hidden, hidden, 3, padding=1), LayerNorm2d(hidden), nn.GELU(),
            nn.Conv2d(hidden, s * k, 1),
        )
        self.encode = nn.Sequential(nn.Conv2d(s, hidden // 2, 3, padding=1), nn.GELU())
        self.prompt = _PromptProjection(s, hidden // 2, no_mask_embed)
        self.config = {"kind": self.kind, "n_structures": s, "experts": k,
                       "template_size": template_size, "gate_size": gate_size, "hidden": hidden}

    @property
    def grid(self) -> int:
        return self.config["template_size"]

    @torch.no_grad()
    def init_templates(self, shapes: torch.Tensor, seed: int = 0) -> None:
        """Start the dictionary from training shapes: (N, S, t, t) ground-truth fractions in [0,1].

        Expert k of structure s starts as the k-th sample's mask of s (cycling, slightly jittered
        when there are fewer samples than experts), so every expert begins as a plausible shape.
        """
        k = self.templates.shape[0]
        gen = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(shapes), generator=gen)
        picks = shapes[idx[torch.arange(k) % len(shapes)]].float()
        picks = picks * 0.9 + 0.05 + 0.02 * torch.randn(picks.shape, generator=gen)
        self.templates.copy_(torch.logit(picks.clamp(0.02, 0.98)))

    def forward(self, embedding: torch.Tensor) -> HeadOutput:
        """(B, 256, 64, 64) embedding -> shape-map logits (B, S, t, t) and per-structure prompts."""
        b = embedding.shape[0]
        k, s, t, _ = self.templates.shape
        gates = self.gate(embedding)
        gates = torch.softmax(gates.view(b, s, k, *gates.shape[-2:]), dim=2).flatten(1, 2)
        gates = F.interpolate(gates, (t, t), mode="bilinear", align_corners=False)
        gates = gates.view(b, s, k, t, t)
        experts = torch.sigmoid(self.templates).permute(1, 0, 2, 3)  # (S, K, t, t)
        shape = (gates * experts.unsqueeze(0)).sum(dim=2).clamp(1e-4, 1 - 1e-4)
        dense, tokens = self.prompt(self.encode(shape))
        return HeadOutput(torch.logit(shape), dense, tokens)


def build_head(config: dict, no_mask_embed: torch.Tensor | None = None) -> nn.Module:
    """A head from its stored config (the `config` dict each head carries)."""
    config = dict(config)
    kind = config.pop("kind", None)
    if kind == "patch":
        return PatchPromptHead(no_mask_embed=no_mask_embed, **config)
    if kind == "shape":
        return ShapeExpertHead(no_mask_embed=no_mask_embed, **config)
    raise ValueError(f"unknown head kind {kind!r}; known: {', '.join(KINDS)}")


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
