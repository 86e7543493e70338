"""Inference backends behind one interface: torch (reference, GPU) and onnxruntime (fast CPU).

    from napari_medsam.core.backends import make_backend
    predictor = Predictor(backend=make_backend("balanced"), cache=cache)

`make_backend("accurate" | "balanced" | "fast" | "auto")` exports the ONNX models on first use
into the per-user cache; afterwards it runs without importing torch. "torch" (the default of
`Predictor`) runs the torch model, on the GPU when there is one. Nothing here imports torch at
import time.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .base import Backend
from .weights import ModelInfo, gate_route, resolve_model

log = logging.getLogger(__name__)
__all__ = ["Backend", "ModelInfo", "make_backend", "onnx_backend_for", "resolve_model"]


def onnx_backend_for(profile, info: ModelInfo, folder: str | Path | None = None, model=None,
                     threads: int | None = None, calibration=None):
    """An OnnxBackend for a `profiles.Profile`, exporting what is missing (needs torch then).

    Args:
        profile: the profile (encoder/decoder precision, region decoding).
        info: the model's identity (`resolve_model` or `ModelInfo.from_model`).
        folder: export folder (default <per-user cache>/onnx).
        model: the loaded torch model, when at hand (used only to export).
        calibration: folder of images for the int8 encoder (default: shipped ranges).
    """
    from .export import ensure_decoder, ensure_encoder
    from .onnx_backend import OnnxBackend

    encoder = ensure_encoder(info, profile.encoder, folder, model, calibration)
    decoder = ensure_decoder(info, profile.decoder, folder=folder, model=model)
    box_decoder = None
    if info.decoder_tag and info.box_base:  # the click adapter: boxes use the base decoder
        box_decoder = ensure_decoder(info.base, profile.decoder, folder=folder, model=model)
    gate, fallback = gate_route(info, model)
    fallbacks = None
    if gate is not None:  # a fine-tuned adapter: images its gate refuses use these decoders
        base = ensure_decoder(info.base, profile.decoder, folder=folder, model=model)
        clicks = base if not fallback.decoder_tag else ensure_decoder(
            fallback, profile.decoder, folder=folder)  # exported from its own folder
        fallbacks = (clicks, base if (fallback.box_base or not fallback.decoder_tag) else clicks)
    return OnnxBackend(encoder, decoder, info, encoder_variant=profile.encoder,
                       decoder_variant=profile.decoder, roi_margin=profile.roi_margin,
                       threads=threads, box_decoder_path=box_decoder, gate=gate,
                       fallback_paths=fallbacks, encoder_engine=profile.encoder_engine,
                       context=profile.context)


def make_backend(
    profile: str = "torch",
    model=None,
    model_name: str | Path = "litemedsam",
    model_type: str | None = None,
    device: str | None = None,
    adapter: str | Path | None = None,
    use_click_adapter: bool | None = None,
    folder: str | Path | None = None,
    threads: int | None = None,
    budget=None,
) -> Backend:
    """A backend by profile name: torch, accurate, balanced, fast or auto.

    Args:
        model: a loaded `SamModel` to run (torch) or export from (ONNX; its active adapter
            is exported merged); default: resolve `model_name` (+ `adapter`).
        device: torch device for "torch" (default cuda when available).
        budget: `profiles.Budget` for "auto" (default 60 ms per click, 1.5 s per slice).
    """
    from ..profiles import choose_auto, get_profile, profile_costs

    name = (profile or "torch").strip().lower()
    if name == "torch":
        from .torch_backend import TorchBackend

        if model is None:
            from ..model import default_device, load_model

            model = load_model(model_name, device=device or default_device(),
                               model_type=model_type, use_click_adapter=use_click_adapter)
            if adapter is not None:
                from ..adapters import adapters_of, find_adapter

                adapters_of(model).load(find_adapter(adapter))
        return TorchBackend(model)
    info = ModelInfo.from_model(model) if model is not None else resolve_model(
        model_name, model_type, adapter, use_click_adapter)
    if name == "auto":
        name = choose_auto(profile_costs(info, threads, folder=folder), budget)
        log.info("auto profile: %s", name)
    return onnx_backend_for(get_profile(name), info, folder, model, threads)
