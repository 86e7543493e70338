"""Save/load small learned parts (LoRA adapters, auto heads) as safetensors + JSON metadata.

No pickle anywhere: tensors go to `*.safetensors`, everything else to `metadata.json`. Metadata
always names the base model and its weights hash so a mismatch is refused with a clear message.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path

from .atomic import atomic_text, recover_folder
from .errors import CheckpointError


def user_data_dir(env: str, name: str) -> Path:
    """$`env` when set, else $XDG_DATA_HOME (~/.local/share)/napari-medsam/`name`: the user's
    own files (adapters, corrections), never a cache that may be cleaned."""
    return Path(os.environ.get(env) or os.path.join(
        os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share"),
        "napari-medsam", name))


def env_switch(env: str) -> bool:
    """False when $`env` is 0 / off / false / no (case-insensitive), else True: the on/off
    switches of optional parts (click adapter, adapter gate, OpenVINO)."""
    return os.environ.get(env, "1").strip().lower() not in ("0", "off", "false", "no")


METADATA_FILE = "metadata.json"


def write_metadata(folder: str | Path, metadata: dict) -> Path:
    """Atomically write `metadata.json` (adds `created` when missing)."""
    metadata = {"created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                **metadata}
    return atomic_text(Path(folder) / METADATA_FILE, json.dumps(metadata, indent=1, sort_keys=True))


def read_metadata(folder: str | Path) -> dict:
    path = recover_folder(folder) / METADATA_FILE
    if not path.is_file():
        raise CheckpointError(f"{folder} has no {METADATA_FILE}: it is not a napari-medsam "
                              "adapter or head folder.")
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is damaged ({exc}); restore it or train again.") from exc


def check_base_model(metadata: dict, model, what: str = "adapter") -> None:
    """Refuse an adapter/head trained on other base weights, in plain words."""
    want = metadata.get("base_model_sha256")
    if want and want != model.weights_sha256:
        raise CheckpointError(
            f"This {what} was trained for the model '{metadata.get('base_model', '?')}' "
            f"(weights {want[:12]}...), but the loaded model is '{model.model_id}' "
            f"(weights {model.weights_sha256[:12]}...). Load the matching model or retrain it."
        )
    named = metadata.get("base_model")
    if not want and named and str(named) != str(model.model_id):
        # without a weights hash the name is all there is: another name is another model
        raise CheckpointError(
            f"This {what} was made for the model '{named}' (its metadata has no weights hash "
            f"to check), but the loaded model is '{model.model_id}'. Load '{named}' or use "
            f"a {what} made for '{model.model_id}'."
        )
