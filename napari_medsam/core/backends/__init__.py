"""Inference backends behind one interface: torch (reference, GPU) and onnxruntime (fast CPU).

Backends are built by `core.runtime` from a `RuntimeSpec` (model, adapter, profile, device);
`onnx_backend_for` here assembles an ONNX backend for one profile, exporting the ONNX models on
first use into the per-user cache (afterwards it runs without importing torch). Nothing here
imports torch at import time.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..routing import ADAPTER, BASE, FALLBACK
from .base import Backend
from .weights import ModelInfo, onnx_route, resolve_model

log = logging.getLogger(__name__)
__all__ = ["Backend", "ModelInfo", "onnx_backend_for", "resolve_model"]


def onnx_backend_for(profile, info: ModelInfo, folder: str | Path | None = None, model=None,
                     threads: int | None = None, calibration=None,
                     use_gate: bool | None = None):
    """An OnnxBackend for a `profiles.Profile`, exporting what is missing (needs torch then).

    Args:
        profile: the profile (encoder/decoder precision, region decoding).
        info: the model's identity (`resolve_model` or `ModelInfo.from_model`).
        folder: export folder (default <per-user cache>/onnx).
        model: the loaded torch model, when at hand (used only to export).
        calibration: folder of images for the int8 encoder (default: shipped ranges).
        use_gate: apply a fine-tuned adapter's domain gate (None: $NAPARI_MEDSAM_ADAPTER_GATE).
    """
    from .export import ensure_decoder, ensure_encoder
    from .onnx_backend import OnnxBackend

    route, gate, fallback = onnx_route(info, model, use_gate)
    infos = {ADAPTER: info} if route.adapter else {}
    needed = route.decoders()
    if BASE in needed:
        infos[BASE] = info.base
    if FALLBACK in needed:
        infos[FALLBACK] = fallback
    encoder = ensure_encoder(info, profile.encoder, folder, model, calibration)
    decoders = {}
    for choice, which in infos.items():  # the fallback exports from its own adapter folder
        decoders[choice] = ensure_decoder(which, profile.decoder, folder=folder,
                                          model=model if choice != FALLBACK else None)
    return OnnxBackend(encoder, decoders, info, route=route, gate=gate, decoder_infos=infos,
                       encoder_variant=profile.encoder, decoder_variant=profile.decoder,
                       roi_margin=profile.roi_margin, threads=threads,
                       encoder_engine=profile.encoder_engine, context=profile.context)
