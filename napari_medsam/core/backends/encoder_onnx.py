"""The image encoder made export-ready: same function, a quarter of the peak memory.

LiteMedSAM's TinyViT runs its first stage (MBConv blocks) at full 256 x 256 resolution with 256
hidden channels: each hidden tensor is 64 MiB, and onnxruntime keeps several alive at once (peak
~300 MiB for one embedding). An MBConv is 1x1 conv -> GELU -> depthwise 3x3 -> GELU -> 1x1 conv,
and the depthwise conv mixes no channels, so the hidden channels can be processed in groups whose
1x1-conv outputs are summed: exact (up to float summation order), 4x smaller hidden tensors.
BatchNorm is folded into the convolutions first (eval mode).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

CHUNKS = 4


def fold_bn(conv_bn) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights and bias of a Conv2d followed by an eval-mode BatchNorm2d (TinyViT Conv2d_BN)."""
    conv, bn = conv_bn.c, conv_bn.bn
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    weight = conv.weight * scale[:, None, None, None]
    bias = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    return weight.detach().clone(), bias.detach().clone()


class ChunkedMBConv(nn.Module):
    """An MBConv block computed over `chunks` groups of hidden channels."""

    def __init__(self, block, chunks: int = CHUNKS):
        super().__init__()
        w1, b1 = fold_bn(block.conv1)
        w2, b2 = fold_bn(block.conv2)
        w3, b3 = fold_bn(block.conv3)
        hidden = w1.shape[0]
        if hidden % chunks:
            chunks = 1
        self.chunks, self.size = chunks, hidden // chunks
        self.act1, self.act2, self.act3 = block.act1, block.act2, block.act3
        self.pad = block.conv2.c.padding
        for g in range(chunks):
            part = slice(g * self.size, (g + 1) * self.size)
            self.register_buffer(f"w1_{g}", w1[part].contiguous())
            self.register_buffer(f"b1_{g}", b1[part].contiguous())
            self.register_buffer(f"w2_{g}", w2[part].contiguous())
            self.register_buffer(f"b2_{g}", b2[part].contiguous())
            self.register_buffer(f"w3_{g}", w3[:, part].contiguous())
        self.register_buffer("b3", b3.reshape(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x + self.b3
        for g in range(self.chunks):
            h = self.act1(F.conv2d(x, getattr(self, f"w1_{g}"), getattr(self, f"b1_{g}")))
            h = F.conv2d(h, getattr(self, f"w2_{g}"), getattr(self, f"b2_{g}"),
                         padding=self.pad, groups=self.size)
            out = out + F.conv2d(self.act2(h), getattr(self, f"w3_{g}"))
        return self.act3(out)


def _is_mbconv(module) -> bool:
    return all(hasattr(getattr(module, n, None), "bn") for n in ("conv1", "conv2", "conv3")) \
        and hasattr(module, "act3")


def export_ready(encoder: nn.Module, chunks: int = CHUNKS) -> nn.Module:
    """A copy of `encoder` with every MBConv block replaced by its chunked equivalent."""
    encoder = copy.deepcopy(encoder).eval()
    for parent in list(encoder.modules()):
        for name, child in list(parent.named_children()):
            if _is_mbconv(child):
                setattr(parent, name, ChunkedMBConv(child, chunks))
    return encoder
