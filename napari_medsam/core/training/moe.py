"""Token-level mixture of LoRA experts (after SegMoTE) in the mask decoder, for comparison with
one plain LoRA of the same trainable-parameter count.

Each target linear layer keeps its frozen weights and gains K low-rank experts; a router reads
every token (image token or prompt token) and sends it to its top-k experts, so image regions
and prompt tokens of different modalities can use different experts. A load-balancing loss
(Switch Transformer: K * sum_k f_k P_k) keeps all experts in use. peft has no token-routed LoRA,
hence this small module. Unlike a plain LoRA it cannot be merged into the weights (the routing
is per token), which matters for the ONNX decoder (see docs/adapters.md).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..adapters import DECODER_TARGETS
from ..atomic import atomic_folder

CONFIG_FILE = "moe_config.json"
WEIGHTS_FILE = "moe_model.safetensors"


class MoELoRALinear(nn.Module):
    """A frozen linear layer plus `experts` rank-`rank` LoRA experts routed per token."""

    def __init__(self, base: nn.Linear, experts: int = 4, rank: int = 2,
                 alpha: float | None = None, top_k: int = 1):
        super().__init__()
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        d_in, d_out = base.in_features, base.out_features
        self.experts, self.rank, self.top_k = experts, rank, top_k
        self.scaling = float(alpha if alpha is not None else 2 * rank) / rank
        self.lora_A = nn.Parameter(torch.empty(experts, rank, d_in))
        self.lora_B = nn.Parameter(torch.zeros(experts, d_out, rank))  # B = 0: no change at first
        self.router = nn.Linear(d_in, experts, bias=False)
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.normal_(self.router.weight, std=1e-3)
        self.enabled = True
        self.aux: torch.Tensor | None = None  # load-balancing loss of the last forward

    @property
    def weight(self) -> torch.Tensor:  # code that reads .weight sees the frozen base
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    def gates(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(gates (..., K): top-k router probabilities renormalised, router probabilities)."""
        probs = F.softmax(self.router(x).float(), dim=-1)
        top, idx = probs.topk(self.top_k, dim=-1)
        gates = torch.zeros_like(probs).scatter(-1, idx, top / top.sum(-1, keepdim=True))
        return gates.to(x.dtype), probs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if not self.enabled:
            return y
        gates, probs = self.gates(x)
        low = torch.einsum("...i,kri->...kr", x, self.lora_A) * gates[..., None]
        y = y + self.scaling * torch.einsum("...kr,kor->...o", low, self.lora_B)
        if torch.is_grad_enabled():  # training: the load-balancing loss of this forward
            tokens = probs.reshape(-1, self.experts)
            share = F.one_hot(tokens.argmax(-1), self.experts).float().mean(0)
            self.aux = self.experts * (share * tokens.mean(0)).sum()
        return y


def _targets(model) -> list[tuple[nn.Module, str, nn.Linear]]:
    pattern = re.compile(DECODER_TARGETS)
    found = []
    for name, module in model.mask_decoder.named_modules():
        for child_name, child in module.named_children():
            full = f"mask_decoder.{name + '.' if name else ''}{child_name}"
            if isinstance(child, nn.Linear) and pattern.fullmatch(full):
                found.append((module, child_name, child))
    return found


def inject(model, experts: int = 4, rank: int = 2, alpha: float | None = None,
           top_k: int = 1) -> dict[str, nn.Parameter]:
    """Wrap the decoder's LoRA target layers (`adapters.DECODER_TARGETS`) with MoE experts;
    returns the trainable parameters by name."""
    for parent, name, child in _targets(model):
        setattr(parent, name, MoELoRALinear(child, experts, rank, alpha, top_k))
    return trainable(model)


def modules(model) -> list[MoELoRALinear]:
    return [m for m in model.mask_decoder.modules() if isinstance(m, MoELoRALinear)]


def trainable(model) -> dict[str, nn.Parameter]:
    return {f"mask_decoder.{n}": p for n, p in model.mask_decoder.named_parameters()
            if any(k in n for k in ("lora_A", "lora_B", "router"))}


def aux_loss(model) -> torch.Tensor:
    """Mean load-balancing loss of the last forward over every expert layer."""
    values = [m.aux for m in modules(model) if m.aux is not None]
    return torch.stack(values).mean() if values else torch.zeros(())


@contextlib.contextmanager
def disabled(model) -> Iterator[None]:
    """The base decoder inside this block (box-only prompts stay the base model's)."""
    found = modules(model)
    for m in found:
        m.enabled = False
    try:
        yield
    finally:
        for m in found:
            m.enabled = True


def count(params: dict[str, nn.Parameter]) -> int:
    return int(sum(p.numel() for p in params.values()))


def save(model, folder: str | Path, metadata: dict) -> Path:
    """Write the experts (safetensors) and their settings + metadata (JSON), atomically."""
    from safetensors.torch import save_file

    first = modules(model)[0]
    config = {"experts": first.experts, "rank": first.rank, "top_k": first.top_k,
              "alpha": first.scaling * first.rank, "targets": DECODER_TARGETS}
    state = {k: v.detach().cpu().contiguous() for k, v in trainable(model).items()}
    with atomic_folder(folder) as tmp:
        save_file(state, str(tmp / WEIGHTS_FILE))
        (tmp / CONFIG_FILE).write_text(json.dumps({**config, "metadata": metadata}, indent=1))
    return Path(folder)


def load(model, folder: str | Path) -> dict:
    """Inject experts into `model` and load them from `folder`; returns the stored metadata."""
    from safetensors.torch import load_file

    folder = Path(folder)
    config = json.loads((folder / CONFIG_FILE).read_text())
    params = inject(model, config["experts"], config["rank"], config["alpha"], config["top_k"])
    state = load_file(str(folder / WEIGHTS_FILE))
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)
    for p in params.values():
        p.requires_grad_(False)
    return config.get("metadata", {})
