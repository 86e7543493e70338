"""Find and load heads: `head.safetensors` (torch) + `head.onnx` (onnxruntime) + `metadata.json`.

The metadata names the base model and its weights hash (a head trained on other weights is
refused), the structures and their label names, the training size and time, the validation Dice,
the head kind and its settings (patch size, experts...), and the inference mode to use.
Shipped heads live in `napari_medsam/resources/heads/<name>/` and are found by name. Torch-free:
the head runs with onnxruntime when the predictor's backend does (see `infer.AutoHead.run`).
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from ..errors import CheckpointError
from ..storage import check_base_model, read_metadata
from .infer import AutoHead

WEIGHTS_FILE = "head.safetensors"
ONNX_FILE = "head.onnx"
FORMAT = "napari-medsam-head/1"


def shipped_heads_dir() -> Path:
    return Path(str(importlib.resources.files("napari_medsam") / "resources" / "heads"))


def list_heads() -> dict[str, Path]:
    """Shipped heads by name, e.g. {"camus-patch": Path(...), ...}."""
    root = shipped_heads_dir()
    if not root.is_dir():
        return {}
    return {p.name: p for p in sorted(root.iterdir()) if (p / WEIGHTS_FILE).is_file()}


def describe(folder: Path) -> str:
    """"name (modality: structures)" of a head folder, for help texts and menus."""
    try:
        meta = read_metadata(folder)
    except CheckpointError:
        return folder.name
    names = ", ".join(meta.get("names") or [])
    return f"{folder.name} ({meta.get('modality', meta.get('dataset', '?'))}: {names})"


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


def load_head(name_or_path: str | Path, target) -> AutoHead:
    """Load a head for `target`: a Predictor (its backend decides torch or onnxruntime) or a
    torch SamModel. Refuses a head trained on other base weights."""
    folder = resolve_head(name_or_path)
    metadata = read_metadata(folder)
    if metadata.get("format") != FORMAT or "config" not in metadata:
        raise CheckpointError(f"{folder} is not an automatic-segmentation head (it may be a LoRA "
                              "adapter: load it as an adapter instead).")
    backend = getattr(target, "backend", None)
    identity = backend.info if backend is not None else target
    check_base_model(metadata, identity, what="automatic-segmentation head")
    if not (folder / WEIGHTS_FILE).is_file() and not (folder / ONNX_FILE).is_file():
        raise CheckpointError(f"The head in {folder} has no weights ({WEIGHTS_FILE}); train it "
                              "again or reinstall the package.")
    head = AutoHead(metadata, folder)
    if backend is None or backend.name == "torch" or not head.onnx_path.is_file():
        head.torch_module(device=getattr(target if backend is None else backend.model,
                                         "device", "cpu"))  # loaded (and checked) now
    return head
