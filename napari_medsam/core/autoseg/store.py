"""Save, load and find heads: `head.safetensors` + `metadata.json`, like the LoRA adapters.

The metadata names the base model and its weights hash (a head trained on other weights is
refused), the structures and their label names, the training size and time, the validation Dice,
the head kind and its settings (patch size, experts...), and the inference mode to use.
Shipped heads live in `napari_medsam/resources/heads/<name>/` and are found by name.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..atomic import atomic_folder
from ..errors import CheckpointError
from ..storage import check_base_model, read_metadata, write_metadata
from .heads import build_head, count_parameters
from .infer import AutoHead

WEIGHTS_FILE = "head.safetensors"
FORMAT = "napari-medsam-head/1"


def shipped_heads_dir() -> Path:
    return Path(str(importlib.resources.files("napari_medsam") / "resources" / "heads"))


def list_heads() -> dict[str, Path]:
    """Shipped heads by name, e.g. {"camus-patch": Path(...), ...}."""
    root = shipped_heads_dir()
    if not root.is_dir():
        return {}
    return {p.name: p for p in sorted(root.iterdir()) if (p / WEIGHTS_FILE).is_file()}


def resolve_head(name_or_path: str | Path) -> Path:
    """A head folder from a shipped name or a path, with a clear error when it is neither."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    shipped = list_heads()
    if str(name_or_path) in shipped:
        return shipped[str(name_or_path)]
    names = ", ".join(shipped) or "none installed"
    raise CheckpointError(f"No head '{name_or_path}': give a head folder or a shipped head name "
                          f"({names}).")


def save_head(folder: str | Path, head: torch.nn.Module, model, metadata: dict) -> Path:
    """Write a head folder atomically (a previous head there is replaced only once all is written).

    Args:
        head: a PatchPromptHead or ShapeExpertHead.
        model: the base SamModel it was trained on (its id and weights hash are recorded).
        metadata: structures, names, training size, validation Dice, mode... (JSON values).
    """
    folder = Path(folder)
    state = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    with atomic_folder(folder) as tmp:
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": FORMAT})
        write_metadata(tmp, {
            **metadata,
            "format": FORMAT,
            "kind": head.config["kind"],
            "config": head.config,
            "parameters": count_parameters(head),
            "base_model": model.model_id,
            "base_model_sha256": model.weights_sha256,
        })
    return folder


def load_head(name_or_path: str | Path, model) -> AutoHead:
    """Load a head for `model`; refuses a head trained on other base weights."""
    folder = resolve_head(name_or_path)
    metadata = read_metadata(folder)
    if metadata.get("format") != FORMAT or "config" not in metadata:
        raise CheckpointError(f"{folder} is not an automatic-segmentation head (it may be a LoRA "
                              "adapter: load it as an adapter instead).")
    check_base_model(metadata, model, what="automatic-segmentation head")
    try:
        module = build_head(metadata["config"])
        module.load_state_dict(load_file(str(folder / WEIGHTS_FILE)), strict=True)
    except Exception as exc:  # safetensors, torch and OS errors alike: the file is unusable
        raise CheckpointError(f"The head in {folder} is damaged or incomplete ({exc}); "
                              "train it again or reinstall the package.") from exc
    return AutoHead(module.to(model.device).eval(), metadata)
