"""The adapter registry, torch-free: a folder of adapters per modality, plus the shipped ones.

Adapters live in `<registry>/<modality>/<name>/` (peft files + metadata.json); the registry is
$NAPARI_MEDSAM_ADAPTERS, else ~/.local/share/napari-medsam/adapters. Listing and finding them
needs no torch, so the light install (ONNX only) can offer them too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .checkpoints import click_adapter_dir
from .errors import CheckpointError, InputError
from .storage import read_metadata, user_data_dir

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"


REGISTRY_ENV = "NAPARI_MEDSAM_ADAPTERS"


@dataclass
class AdapterInfo:
    """One adapter folder found in the registry (or shipped in the package)."""

    name: str
    modality: str
    path: Path
    metadata: dict
    shipped: bool = False


def registry_dir() -> Path:
    """The user's adapter registry: $NAPARI_MEDSAM_ADAPTERS, else
    ~/.local/share/napari-medsam/adapters; adapters live in <registry>/<modality>/<name>/."""
    return user_data_dir(REGISTRY_ENV, "adapters")


def registry_path(name: str, modality: str = "any", root: str | Path | None = None) -> Path:
    """Where an adapter called `name` for `modality` is kept in the registry."""
    for part in (name, modality):
        if not part or "/" in part or "\\" in part or part.startswith("."):
            raise InputError(f"'{part}' cannot be used as an adapter or modality name.")
    return Path(root or registry_dir()) / modality.lower() / name


def new_adapter_path(name: str, modality: str = "any", root: str | Path | None = None) -> Path:
    """Registry folder for an adapter a front end is about to train; the name is checked
    (letters, digits, '-', '_' and '.'). Raises InputError with a plain message otherwise."""
    name = name.strip()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise InputError(f"'{name}' cannot be an adapter name: use letters, digits, '-' "
                         "and '_'.")
    return registry_path(name, modality, root)


def _info(folder: Path, shipped: bool) -> AdapterInfo | None:
    if not (folder / CONFIG_FILE).is_file():
        return None
    try:
        meta = read_metadata(folder)
    except CheckpointError:
        return None
    return AdapterInfo(meta.get("name") or folder.name, meta.get("modality", "any"), folder,
                       meta, shipped)


def list_adapters(root: str | Path | None = None) -> list[AdapterInfo]:
    """The shipped adapters and every adapter in the registry, by modality then name."""
    found = []
    shipped = click_adapter_dir().parent
    if shipped.is_dir():
        found += [i for f in sorted(shipped.iterdir()) if (i := _info(f, True))]
    root = Path(root or registry_dir())
    if root.is_dir():
        for modality in sorted(p for p in root.iterdir() if p.is_dir()):
            found += [i for f in sorted(modality.iterdir())
                      if f.is_dir() and (i := _info(f, False))]
    return found


def find_adapter(name_or_path: str | Path, root: str | Path | None = None) -> Path:
    """An adapter folder from a path, "modality/name" or a unique name in the registry."""
    path = Path(name_or_path).expanduser()
    if (path / CONFIG_FILE).is_file():
        return path
    text = str(name_or_path)
    matches = [i for i in list_adapters(root)
               if text in (i.name, f"{i.modality}/{i.name}", i.path.name)]
    if len(matches) == 1:
        return matches[0].path
    if not matches:
        where = Path(root or registry_dir())
        raise CheckpointError(f"No adapter '{text}' was found (not a folder with {CONFIG_FILE}, "
                              f"nor in the registry {where}). See `napari-medsam adapters list`.")
    where = ", ".join(f"{i.modality}/{i.name}" for i in matches)
    raise InputError(f"Several adapters are called '{text}' ({where}); give modality/name.")
