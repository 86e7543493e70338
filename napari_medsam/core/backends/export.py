"""Export the encoder and decoder to ONNX (and int8) into the per-user cache, on first use.

File names carry the model kind, the weights hash, any adapter id and an export version, so a new
model, a new adapter or a changed exporter never reuses a stale file:
    litemedsam-79d8c9dca6db4d69-encoder-int8-v3.onnx
    litemedsam-79d8c9dca6db4d69-lora.ab12cd34-decoder-fp32-v5.onnx
Files are written to a temporary name and renamed, so an interrupted export leaves nothing behind.
This module imports torch; it runs only when a file is missing (or from `napari-medsam export`).
"""

from __future__ import annotations

import copy
import logging
import re
import warnings
from pathlib import Path

from ..atomic import atomic_write_path
from ..checkpoints import shipped_onnx_dir
from ..embeddings import default_cache_dir
from ..errors import MedSAMError
from .weights import ModelInfo

log = logging.getLogger(__name__)
EXPORT_VERSION = 3  # encoder files
DECODER_EXPORT_VERSION = 6  # v4: final attention on the tokens read; v5: token pausing inputs;
# v6: dense_prompt / use_dense / extra_tokens (the automatic heads decode with it too)
OPSET = 17
ENCODER_VARIANTS = ("fp32", "int8", "int8-all", "int8-static")
DECODER_VARIANTS = ("fp32", "int8")


def onnx_dir(folder: str | Path | None = None) -> Path:
    """Where exports live: `folder`, else <per-user cache>/onnx."""
    return Path(folder) if folder is not None else default_cache_dir() / "onnx"


def _found(path: Path, folder) -> Path | None:
    """`path` when it exists, else its shipped twin (default folder only), else None: the
    shipped models are found before any export, so no torch is needed for them."""
    if path.is_file():
        return path
    shipped = shipped_onnx_dir() / path.name
    return shipped if folder is None and shipped.is_file() else None


def _safe(tag: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "_", tag)[:40]


def _stem(info: ModelInfo, tag: str) -> str:
    return f"{info.kind}-{info.weights_sha256[:16]}" + (f"-{_safe(tag)}" if tag else "")


def encoder_file(info: ModelInfo, variant: str, folder=None) -> Path:
    """Path of the exported encoder (keyed by weights hash and encoder adapter id)."""
    name = f"{_stem(info, info.encoder_tag)}-encoder-{variant}-v{EXPORT_VERSION}.onnx"
    return onnx_dir(folder) / name


def decoder_file(info: ModelInfo, variant: str, multimask: bool = False, folder=None) -> Path:
    """Path of the exported decoder (keyed by weights hash and decoder adapter id)."""
    multi = "-multi" if multimask else ""
    version = DECODER_EXPORT_VERSION
    name = f"{_stem(info, info.decoder_tag)}-decoder-{variant}{multi}-v{version}.onnx"
    return onnx_dir(folder) / name


def merged(module, adapted: bool = True):
    """A plain copy of `module` for export: peft LoRA layers merged into their weights (the
    active adapter, `adapted=True`) or dropped (the base model, `adapted=False`)."""
    module = copy.deepcopy(module)
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if hasattr(child, "merge") and hasattr(child, "get_base_layer"):  # peft LoRA layer
                if adapted and getattr(child, "active_adapters", None):
                    child.merge()
                setattr(parent, name, child.get_base_layer())
    return module


def _torch_export(module, args, path: Path, inputs, outputs, dynamic_axes=None) -> None:
    import torch

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, args, str(path), input_names=inputs, output_names=outputs,
            dynamic_axes=dynamic_axes, opset_version=OPSET, dynamo=False,
        )


def export_encoder(model, path: str | Path) -> Path:
    """Export the (adapter-merged) image encoder of a `SamModel` as fp32 ONNX, with its MBConv
    blocks computed in channel groups (same function, lower peak memory; `encoder_onnx`)."""
    import torch

    from .encoder_onnx import export_ready

    adapted = bool(getattr(model, "encoder_tag", ""))
    encoder = export_ready(merged(model.image_encoder, adapted).cpu().float().eval())
    x = torch.zeros(1, 3, model.image_size, model.image_size)
    return atomic_write_path(Path(path), lambda p: _torch_export(
        encoder, (x,), p, ["image"], ["image_embeddings"]))


def export_decoder(model, path: str | Path, multimask: bool = False, adapted: bool = True
                   ) -> Path:
    """Export prompt encoder + mask decoder (mask 0, or the 3 multimask outputs) as fp32 ONNX.

    Args:
        model: the `SamModel`.
        adapted: merge the active LoRA adapter into the weights (False: export the base decoder).
    """
    from .decoder_onnx import DYNAMIC_AXES, INPUT_NAMES, OUTPUT_NAMES, DecoderOnnx, example_inputs

    if any(type(m).__name__ == "MoELoRALinear" for m in model.mask_decoder.modules()):
        raise MedSAMError("A decoder with token-routed experts (training.moe) cannot be merged "
                          "into the ONNX decoder: use the torch profile for it.")
    decoder = merged(model.mask_decoder, adapted)
    prompt_encoder = copy.deepcopy(model.prompt_encoder).cpu().float().eval()
    wrapper = DecoderOnnx(prompt_encoder, decoder.cpu().float().eval(), model.image_size, multimask)
    side = model.prompt_encoder.image_embedding_size[0]
    return atomic_write_path(Path(path), lambda p: _torch_export(
        wrapper.eval(), example_inputs(model.image_size, side), p, INPUT_NAMES, OUTPUT_NAMES,
        DYNAMIC_AXES))


def load_torch_model(info: ModelInfo):
    """Load the torch model `info` describes, with its adapter active (imports torch)."""
    from ..errors import require_torch

    require_torch("Exporting this model or adapter to ONNX")
    from ..model import load_model

    name = "litemedsam" if info.model_id == "litemedsam" else info.checkpoint_path
    model = load_model(name, device="cpu", model_type=info.kind, use_click_adapter=False)
    if info.adapter_dir:
        from ..adapters import adapters_of

        adapters_of(model).load(info.adapter_dir)
    elif info.decoder_tag or info.encoder_tag:
        raise MedSAMError(
            "This adapted model has not been exported yet and its adapter folder is unknown: "
            "export it from the loaded model (runtime.build_backend(spec, model=model))."
        )
    return model


def _load_model(info: ModelInfo, model):
    return model if model is not None else load_torch_model(info)


def ensure_encoder(info: ModelInfo, variant: str = "fp32", folder=None, model=None,
                   calibration=None) -> Path:
    """The encoder file for `variant`, exporting (and quantizing) it if it is missing.

    Args:
        variant: "fp32", "int8", "int8-all" or "int8-static" (see `quantize`); "bf16" gives
            the fp32 file (for OpenVINO).
        calibration: for "int8-static": a folder of images to calibrate on; default the
            ranges shipped with the package (measured on real training images).
    """
    if variant == "bf16":  # OpenVINO runs the fp32 export in bf16 (it converts when compiling)
        variant = "fp32"
    if variant not in ENCODER_VARIANTS:
        raise MedSAMError(f"Unknown encoder variant '{variant}': {', '.join(ENCODER_VARIANTS)}.")
    path = encoder_file(info, variant, folder)
    if _found(path, folder):
        return _found(path, folder)
    fp32 = _found(encoder_file(info, "fp32", folder), folder)
    if fp32 is None:
        fp32 = encoder_file(info, "fp32", folder)
        log.warning("Exporting the image encoder to ONNX (once): %s", fp32)
        export_encoder(_load_model(info, model), fp32)
    if variant != "fp32":
        from .quantize import quantize_encoder

        log.warning("Quantizing the image encoder to int8 (once): %s", path)
        atomic_write_path(path, lambda p: quantize_encoder(fp32, p, info, variant, calibration))
    return path


def ensure_decoder(info: ModelInfo, variant: str = "fp32", multimask: bool = False, folder=None,
                   model=None) -> Path:
    """The decoder file for `variant`, exporting (and quantizing) it if it is missing."""
    if variant not in DECODER_VARIANTS:
        raise MedSAMError(f"Unknown decoder variant '{variant}': {', '.join(DECODER_VARIANTS)}.")
    path = decoder_file(info, variant, multimask, folder)
    if _found(path, folder):
        return _found(path, folder)
    fp32 = _found(decoder_file(info, "fp32", multimask, folder), folder)
    if fp32 is None:
        fp32 = decoder_file(info, "fp32", multimask, folder)
        log.warning("Exporting the prompt decoder to ONNX (once): %s", fp32)
        export_decoder(_load_model(info, model), fp32, multimask, adapted=bool(info.decoder_tag))
    if variant == "int8":
        from .quantize import quantize_dynamic_int8

        atomic_write_path(path, lambda p: quantize_dynamic_int8(fp32, p))
    return path
