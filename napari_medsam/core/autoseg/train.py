"""Train a head on cached embeddings: a small loop of its own, CPU-friendly, with progress + cancel.

Two phases (the image encoder never runs; the mask decoder stays frozen):
1. head map only: the patch map (BCE against max-pooled ground truth, ESP-MedSAM) or the shape
   map (BCE + Dice against the area-pooled ground truth, TiPE-SAM). No decoder: a few seconds.
2. through the decoder: the dense prompts and query tokens are trained with Dice + BCE on the
   decoder's final mask (gradients pass through the frozen decoder), the head-map loss kept on.
   Each step decodes one random structure per image, which keeps a step cheap on a CPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import CancelledError, InputError
from .data import Example
from .decoding import decode_heads, frozen
from .heads import KINDS, PatchPromptHead, ShapeExpertHead, count_parameters

ProgressFn = Callable[[str, int, int, float], None]  # phase, step, total, loss


@dataclass
class HeadTrainConfig:
    """What to build and how long to train it (the defaults are the shipped heads' settings)."""

    kind: str = "patch"
    patch_size: int = 16
    experts: int = 8
    template_size: int = 32
    gate_size: int = 32
    hidden: int = 64
    map_steps: int = 200  # phase 1
    decoder_steps: int = 150  # phase 2
    batch: int = 8  # phase 1 batch; phase 2 uses decoder_batch
    decoder_batch: int = 4
    lr: float = 3e-3
    prompt_lr_scale: float = 3.0  # the zero-initialised prompt projection learns faster
    weight_decay: float = 1e-2
    map_weight: float = 1.0
    seed: int = 0
    threads: int | None = None  # torch threads while training (None: leave as is)
    bf16: bool = True  # bfloat16 autocast for the decoder pass (~1.7x faster on AVX512-BF16)


@dataclass
class HeadTrainResult:
    head: torch.nn.Module
    config: HeadTrainConfig
    seconds: float  # wall clock
    cpu_seconds: float  # CPU time of this process (what a busy machine does not inflate)
    history: dict[str, list[float]] = field(default_factory=dict)

    @property
    def parameters(self) -> int:
        return count_parameters(self.head)


def build(config: HeadTrainConfig, n_structures: int, model) -> torch.nn.Module:
    """A fresh head for `config`, its prompt bias set to the model's "no mask" embedding."""
    if config.kind not in KINDS:
        raise InputError(f"Unknown head kind '{config.kind}'. Choose one of: {', '.join(KINDS)}.")
    no_mask = model.prompt_encoder.no_mask_embed.weight.detach().cpu()
    if config.kind == "patch":
        return PatchPromptHead(n_structures, config.patch_size, config.hidden, no_mask)
    return ShapeExpertHead(n_structures, config.experts, config.template_size, config.gate_size,
                           config.hidden, no_mask)


def map_target(head: torch.nn.Module, target: torch.Tensor) -> torch.Tensor:
    """Ground truth on the head's grid: max-pooled (patch: any foreground) or area-pooled."""
    k = target.shape[-1] // head.grid
    if head.kind == "patch":
        return F.max_pool2d((target > 0.5).float(), k)
    return F.avg_pool2d(target.float(), k)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    p = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    return (1 - (2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)).mean()


def map_loss(head: torch.nn.Module, lowres: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE on the patch map (ESP-MedSAM eq. 6); BCE + Dice on the shape map."""
    t = map_target(head, target)
    loss = F.binary_cross_entropy_with_logits(lowres, t)
    if head.kind == "shape":
        loss = loss + soft_dice_loss(lowres.flatten(0, 1), t.flatten(0, 1))
    return loss


def mask_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Dice + BCE of the decoder's (N, 1, 256, 256) logits against the binary ground truth."""
    t = (target > 0.5).float()
    return soft_dice_loss(logits.flatten(0, 1), t.flatten(0, 1)) + \
        F.binary_cross_entropy_with_logits(logits, t)


@torch.no_grad()
def example_loss(model, head: torch.nn.Module, examples: list[Example]) -> float:
    """Mean head-map + final-mask loss over `examples` (all structures), for monitoring."""
    head.eval()
    total = 0.0
    for ex in examples:
        x = ex.features[None].float().to(model.device)
        t = ex.target[None].float().to(model.device)
        out = head(x)
        logits = decode_heads(model, x, out)
        total += float(mask_loss(logits.flatten(0, 1)[:, None], t.flatten(0, 1)[:, None]))
        total += float(map_loss(head, out.lowres, t))
    return total / max(1, len(examples))


def train_head(
    model,
    examples: list[Example],
    config: HeadTrainConfig | None = None,
    progress: ProgressFn | None = None,
    cancel: Callable[[], bool] | None = None,
) -> HeadTrainResult:
    """Train a new head on `examples` (embeddings + per-structure targets).

    Raises CancelledError when `cancel()` turns true; InputError without examples.
    """
    config = config or HeadTrainConfig()
    if not examples:
        raise InputError("No annotated images to train on: commit at least one annotation.")
    old_threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return _train(model, examples, config, progress, cancel)
    finally:
        torch.set_num_threads(old_threads)


def _train(model, examples, config, progress, cancel) -> HeadTrainResult:
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    n_structures = examples[0].target.shape[0]
    head = build(config, n_structures, model).to(model.device)
    feats = torch.stack([e.features for e in examples])  # float16, (N, 256, 64, 64)
    targets = torch.stack([e.target for e in examples])  # float16, (N, S, 256, 256)
    if head.kind == "shape":
        head.init_templates(map_target(head, targets.float()), seed=config.seed)
    dev = model.device
    history: dict[str, list[float]] = {"map": [], "decoder": []}
    start, cpu_start = time.perf_counter(), time.process_time()

    def batch(size: int):
        idx = torch.from_numpy(rng.choice(len(examples), min(size, len(examples)), replace=False))
        return feats[idx].float().to(dev), targets[idx].float().to(dev)

    def check(phase: str, step: int) -> None:
        if cancel is not None and cancel():
            raise CancelledError(f"Training cancelled in the {phase} phase at step {step}.")

    # phase 1: the head's own map, no decoder
    opt = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, config.lr,
                                                total_steps=max(1, config.map_steps))
    head.train()
    for step in range(config.map_steps):
        check("head-map", step)
        x, t = batch(config.batch)
        loss = map_loss(head, head(x).lowres, t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        history["map"].append(float(loss))
        if progress is not None:
            progress("head map", step + 1, config.map_steps, float(loss))

    # phase 2: through the frozen decoder, one random structure per image per step
    prompt = list(head.prompt.parameters())
    ids = {id(p) for p in prompt}
    rest = [p for p in head.parameters() if id(p) not in ids]
    lrs = [config.lr, config.lr * config.prompt_lr_scale]
    opt = torch.optim.AdamW([{"params": rest}, {"params": prompt}], lr=config.lr,
                            weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lrs, total_steps=max(1, config.decoder_steps))
    with frozen(model.mask_decoder), frozen(model.prompt_encoder):
        for step in range(config.decoder_steps):
            check("decoder", step)
            x, t = batch(config.decoder_batch)
            which = torch.from_numpy(rng.integers(0, n_structures, len(x))).to(dev)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=config.bf16):
                out = head(x)
                logits = decode_heads(model, x, out, which)
            picked = t[torch.arange(len(x), device=dev), which][:, None]
            loss = mask_loss(logits.float(), picked) + \
                config.map_weight * map_loss(head, out.lowres.float(), t)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            history["decoder"].append(float(loss))
            if progress is not None:
                progress("decoder", step + 1, config.decoder_steps, float(loss))
    head.eval()
    return HeadTrainResult(head.cpu(), config, time.perf_counter() - start,
                       time.process_time() - cpu_start, history)


def config_dict(config: HeadTrainConfig) -> dict:
    return asdict(config)
