"""Resumable training state: tensors in safetensors, the rest in JSON (no pickle).

Written atomically after every validation, so a crash or a cancel loses at most one interval.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from ..atomic import atomic_text, atomic_write_path

TENSORS = "state.safetensors"
INFO = "state.json"


def save_state(folder, params, optimizer, scheduler, *, step, history, best, best_step,
               val_before, rng_seed, best_params) -> None:
    """Write params, best params, Adam moments and counters to `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = list(params)
    tensors = {f"param/{k}": p.detach().float().cpu().numpy() for k, p in params.items()}
    tensors.update({f"best/{k}": v.float().cpu().numpy() for k, v in best_params.items()})
    opt = optimizer.state_dict()
    for i, name in enumerate(names):
        for slot, value in opt["state"].get(i, {}).items():
            if torch.is_tensor(value):
                tensors[f"adam/{slot}/{name}"] = value.float().cpu().numpy().reshape(
                    value.shape if value.dim() else (1,))
    info = {"step": step, "history": history, "best": best, "best_step": best_step,
            "val_before": val_before, "rng_seed": rng_seed, "names": names,
            "scheduler": {k: v for k, v in scheduler.state_dict().items()
                          if isinstance(v, (int, float, list))}}
    atomic_write_path(folder / TENSORS, lambda tmp: save_file(tensors, str(tmp)))
    atomic_text(folder / INFO, json.dumps(info))


def load_state(folder, params, optimizer, scheduler) -> dict | None:
    """Restore a saved state into params/optimizer/scheduler; None when there is none (or it
    belongs to other parameters)."""
    folder = Path(folder)
    if not (folder / TENSORS).is_file() or not (folder / INFO).is_file():
        return None
    info = json.loads((folder / INFO).read_text())
    tensors = load_file(str(folder / TENSORS))
    if info.get("names") != list(params):
        return None
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(torch.from_numpy(tensors[f"param/{k}"]))
    opt = optimizer.state_dict()
    for i, name in enumerate(info["names"]):
        slots = {}
        for slot in ("step", "exp_avg", "exp_avg_sq"):
            key = f"adam/{slot}/{name}"
            if key in tensors:
                value = torch.from_numpy(np.ascontiguousarray(tensors[key]))
                shape = () if slot == "step" else params[name].shape
                slots[slot] = value.reshape(shape)
        if slots:
            opt["state"][i] = slots
    optimizer.load_state_dict(opt)
    sched = scheduler.state_dict()
    sched.update(info.get("scheduler", {}))
    scheduler.load_state_dict(sched)
    info["best_params"] = {k[len("best/"):]: v for k, v in tensors.items() if k.startswith("best/")}
    return info
