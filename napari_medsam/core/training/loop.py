"""The training loop: simulated prompts on cached embeddings, Dice + BCE, early stopping.

It knows nothing about peft: it gets the model (with its adapter active) and the trainable
tensors. Progress is reported through a callback, `cancel()` is polled between steps and raises
`CancelledError`; a checkpoint folder (safetensors + JSON, no pickle) lets a run be resumed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..embeddings import EmbeddingCache
from ..errors import CancelledError, InputError
from ..zoom import ZoomPolicy
from .data import TrainSet, cached_features
from .rollout import Batch, Rollout, seg_loss, whole_image_objects
from .state import load_state, save_state


@dataclass
class TrainConfig:
    """Training recipe (stored in the adapter's metadata).

    steps: optimizer steps at most; minutes: wall-clock budget (None: no limit).
    mix: probabilities of the prompt modes (box, clicks, box+clicks) per step.
    max_clicks: a click rollout has 1..max_clicks clicks, each pass a training signal.
    jitter: training clicks land among the pixels at least (1 - jitter) as deep as the deepest.
    balance: dataset sampling weight ~ (objects in the dataset) ** balance.
    val_every / patience: validate every N steps; stop after `patience` checks without gain
        (keep "best" only).
    box_prompts: "adapter" (boxes are trained too) or "base" (box-only prompts stay with the
        base model, as for the click adapter; the box of box + clicks comes from the base).
    box_keep: with box_prompts "base", the weight of a box-only pass through the adapter's
        own weights, trained to the ground truth each step: a user's fine-tune that starts from
        the adapter answers boxes with those weights. 0: off (they drift untrained). Objects
        small enough for a zoomed window are left out (the app boxes them on the window).
    bf16: bfloat16 autocast for the trained passes (faster; validation stays float32).
    keep: "best" (the best-validated weights) or "last" (the end of the schedule; for a
        recipe whose aims are not all in the validation score, e.g. `box_keep`).
    """

    steps: int = 400
    minutes: float | None = None
    batch_size: int = 4
    lr: float = 2e-3
    weight_decay: float = 1e-4
    mix: tuple[float, float, float] = (0.2, 0.55, 0.25)
    max_clicks: int = 6
    jitter: float = 0.4
    box_margin: tuple[int, int] = (0, 12)
    balance: float = 0.5
    val_every: int = 50
    patience: int = 4
    val_clicks: int = 5
    box_prompts: str = "adapter"
    box_keep: float = 0.0
    bf16: bool = False
    keep: str = "best"
    seed: int = 0
    device: str = "cpu"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Progress:
    """What a progress callback receives after each step (val is set after a validation)."""

    step: int
    steps: int
    loss: float
    elapsed: float
    val: dict | None = None
    best: float = 0.0


@dataclass
class TrainResult:
    steps: int
    best_step: int
    val_before: dict
    val_after: dict
    seconds: float
    stopped: str  # "steps", "early", "time"
    history: list[dict] = field(default_factory=list)


def bf16_is_fast(device: str = "cpu") -> bool:
    """Whether bfloat16 autocast speeds training up here (a GPU with bf16, or a CPU with
    AVX-512 BF16 / AMX); elsewhere it would be emulated and slower."""
    if str(device).startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        with open("/proc/cpuinfo") as handle:
            flags = handle.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def score(val: dict) -> float:
    """One number to early-stop on: mean of the box and click Dice figures (and of the
    adapter's own box answer, where the box goes to the base model)."""
    return float(np.mean([v for k, v in val.items() if k.startswith(("box", "click"))]))


@torch.no_grad()
def validate(model, data: TrainSet, cache: EmbeddingCache, n_clicks: int = 5,
             batch_size: int = 8, device: str = "cpu", box_context=None) -> dict:
    """Mean Dice on `data` (model frame): box, and after 1..n_clicks clicks (deterministic)."""
    if len(data) == 0:
        return {}
    roll = Rollout(model, box_context=box_context)
    own = Rollout(model) if box_context is not None else None
    box, box_own, clicks = [], [], []
    for start in range(0, len(data), batch_size):
        batch = make_batch(data, list(range(start, min(start + batch_size, len(data)))),
                           cache, device)
        box.append(roll.run(batch, "box", 0)[0])
        if own is not None:
            box_own.append(own.run(batch, "box", 0)[0])
        clicks.append(np.stack(roll.run(batch, "clicks", n_clicks), axis=1))
    per_click = np.concatenate(clicks).mean(axis=0)
    out = {"box": float(np.concatenate(box).mean())}
    out.update({f"click{k + 1}": float(v) for k, v in enumerate(per_click)})
    if box_own:  # the adapter's own box answer (what a fine-tune starting from it starts with)
        out["box_own"] = float(np.concatenate(box_own).mean())
    return out


def make_batch(data: TrainSet, indices: list[int], cache: EmbeddingCache, device) -> Batch:
    feats = np.stack([cached_features(cache, data.images[data.objects[i][0]].key) for i in indices])
    truth = np.stack([data.truth(i) for i in indices])[:, None].astype(np.float32)
    valid = np.stack([data.valid(i) for i in indices])[:, None].astype(np.float32)
    return Batch(torch.from_numpy(feats).to(device), torch.from_numpy(truth).to(device),
                 torch.from_numpy(valid).to(device))


def sampling_weights(data: TrainSet, balance: float) -> np.ndarray:
    names = np.array([data.images[i].dataset for i, _ in data.objects])
    weights = np.zeros(len(names))
    for name in np.unique(names):
        sel = names == name
        weights[sel] = sel.sum() ** balance / sel.sum()
    return weights / weights.sum()


def train(
    model,
    params: dict[str, torch.nn.Parameter],
    train_set: TrainSet,
    val_set: TrainSet,
    cache: EmbeddingCache,
    config: TrainConfig,
    progress: Callable[[Progress], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    checkpoint_dir=None,
    base_context=None,
    aux_loss: Callable[[], torch.Tensor] | None = None,
    aux_weight: float = 0.01,
) -> TrainResult:
    """Train `params` in place; at the end they hold the best validated weights.

    Args:
        base_context: a context manager factory that turns the adapter off (needed when
            `config.box_prompts == "base"`).
        aux_loss: an extra loss read after each pass (the experts' load balancing, see
            `training.moe`), weighted by `aux_weight`.

    Raises:
        CancelledError: when `cancel()` turns true (a checkpoint is kept for resuming).
    """
    if len(train_set) == 0:
        raise InputError("There is nothing to train on: no objects with cached embeddings.")
    box_context = base_context if config.box_prompts == "base" else None
    if config.box_prompts == "base" and base_context is None:
        raise ValueError("box_prompts='base' needs base_context")
    if config.keep not in ("best", "last"):
        raise ValueError(f"keep must be 'best' or 'last', not {config.keep!r}")
    dev = torch.device(config.device)
    optimizer = torch.optim.AdamW(list(params.values()), lr=config.lr,
                                  weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / 20) * (0.1 + 0.9 * (1 - s / max(config.steps, 1))))
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    state = load_state(checkpoint_dir, params, optimizer, sched) if checkpoint_dir else None
    if state is not None:
        step, history = state["step"], state["history"]
        best, best_step = state["best"], state["best_step"]
        val_before, rng = state["val_before"], np.random.default_rng(state["rng_seed"])
        best_params = {k: torch.from_numpy(v).to(dev) for k, v in state["best_params"].items()}
    else:
        step, history, best_step = 0, [], 0
        val_before = validate(model, val_set, cache, config.val_clicks, device=dev,
                              box_context=box_context)
        best = score(val_before) if val_before else -1.0
        best_params = {k: p.detach().clone() for k, p in params.items()}
        history.append({"step": 0, **val_before})
    weights = sampling_weights(train_set, config.balance)
    roll = Rollout(model, rng, config.jitter, config.box_margin, box_context, config.bf16)
    own_box = (Rollout(model, rng, config.jitter, config.box_margin, None, config.bf16)
               if config.box_keep > 0 and box_context is not None else None)
    start, bad, stopped, loss_avg = time.monotonic(), 0, "steps", 0.0
    while step < config.steps:
        if cancel is not None and cancel():
            raise CancelledError(f"Fine-tuning cancelled at step {step}; the previous adapter "
                                 "is unchanged.")
        idx = rng.choice(len(train_set), size=config.batch_size, p=weights)
        batch = make_batch(train_set, list(idx), cache, dev)
        mix = np.array(config.mix, float)
        if not roll.trains_box:
            mix[0] = 0.0  # box-only prompts are the base model's job
        mode = str(rng.choice(["box", "clicks", "box+clicks"], p=mix / mix.sum()))
        n_clicks = int(rng.integers(1, config.max_clicks + 1))
        n_pass = (mode != "clicks" and roll.trains_box) + (n_clicks if mode != "box" else 0)
        losses = []

        def backward(logits, n_pass=n_pass, batch=batch, losses=losses):
            loss = seg_loss(logits, batch.truth, batch.valid) / n_pass
            if aux_loss is not None:
                loss = loss + aux_weight * aux_loss() / n_pass
            loss.backward()
            losses.append(float(loss.detach()) * n_pass)

        roll.run(batch, mode, n_clicks, on_pass=backward)
        if own_box is not None:  # small objects are boxed on a zoomed window, not here
            weight = torch.from_numpy(whole_image_objects(
                batch.truth_np, batch.valid_np, ZoomPolicy())).to(dev)
            if weight.sum() > 0:
                own_box.run(batch, "box", 0, on_pass=lambda logits, batch=batch, w=weight: (
                    config.box_keep * seg_loss(logits, batch.truth, batch.valid, w)).backward())
        optimizer.step()
        sched.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        loss_avg = float(np.mean(losses)) if step == 1 else 0.95 * loss_avg + 0.05 * np.mean(losses)
        elapsed = time.monotonic() - start
        out_of_time = config.minutes is not None and elapsed > config.minutes * 60
        val = None
        if val_set and (step % config.val_every == 0 or step == config.steps or out_of_time):
            val = validate(model, val_set, cache, config.val_clicks, device=dev,
                           box_context=box_context)
            history.append({"step": step, "loss": round(loss_avg, 4), **val})
            if score(val) > best:
                best, best_step, bad = score(val), step, 0
                best_params = {k: p.detach().clone() for k, p in params.items()}
            else:
                bad += 1
            if checkpoint_dir is not None:
                save_state(checkpoint_dir, params, optimizer, sched, step=step, history=history,
                           best=best, best_step=best_step, val_before=val_before,
                           rng_seed=int(rng.integers(2**31)), best_params=best_params)
        if progress is not None:
            progress(Progress(step, config.steps, float(loss_avg), elapsed, val, best))
        if val is not None and bad >= config.patience and config.keep == "best":
            stopped = "early"
            break
        if out_of_time:
            stopped = "time"
            break
    if not val_set or config.keep == "last":
        best_params = {k: p.detach().clone() for k, p in params.items()}
        best_step = step
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(best_params[k])
    val_after = next((h for h in history if h["step"] == best_step), {}) if val_set else {}
    val_after = {k: v for k, v in val_after.items() if k not in ("step", "loss")}
    return TrainResult(step, best_step, val_before, val_after, time.monotonic() - start,
                       stopped, history)
