"""Options shared by several verbs: model, device, preset, cache."""

from __future__ import annotations

import argparse


def add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="litemedsam",
                   help="'litemedsam' (built in) or the path of a SAM/MedSAM checkpoint")
    p.add_argument("--model-type", default=None,
                   choices=["litemedsam", "sam_vit_b", "medsam_vit_b"],
                   help="kind of checkpoint given with --model PATH (guessed from the name)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--preset", default="auto",
                   help="intensity preset: auto, as-is, mri, ct-soft-tissue, ct-lung, ct-bone, "
                        "ct-brain, ct-abdomen, ct-custom:LEVEL,WIDTH")
    p.add_argument("--cache-dir", default=None,
                   help="on-disk embedding cache folder (default: the per-user cache)")
    p.add_argument("--no-disk-cache", action="store_true", help="keep embeddings in memory only")
    p.add_argument("--no-click-adapter", action="store_true",
                   help="do not load the shipped click adapter (clicks then use the box-only "
                        "base model; also $NAPARI_MEDSAM_CLICK_ADAPTER=0)")
    p.add_argument("--adapter", default=None,
                   help="a LoRA adapter folder (or registry name) to use instead of the click "
                        "adapter (see `napari-medsam adapters list`)")
    p.add_argument("--no-adapter-gate", action="store_true",
                   help="apply --adapter to every image, even to images unlike the ones it was "
                        "trained on (by default those use the model without it; also "
                        "$NAPARI_MEDSAM_ADAPTER_GATE=0)")
    p.add_argument("--profile", default="torch",
                   choices=["torch", "accurate", "balanced", "fast", "auto"],
                   help="how to run the model: torch (default; GPU when available), or ONNX "
                        "Runtime on the CPU: accurate (fp32), balanced (int8 decoder), fast (bf16 "
                        "encoder on OpenVINO where the CPU has bf16, else int8), auto (the most "
                        "accurate one within the latency budget on this machine); see "
                        "docs/performance.md")


def make_predictor(args):
    """Predictor from the parsed model options (an ONNX profile never imports torch once the
    models are exported)."""
    from ..core.embeddings import EmbeddingCache, default_cache_dir
    from ..core.predictor import Predictor

    clicks = False if getattr(args, "no_click_adapter", False) else None
    if getattr(args, "no_adapter_gate", False):
        import os

        from ..core.domain_gate import GATE_ENV

        os.environ[GATE_ENV] = "0"  # read when the adapter and the backend are made
    disk = None if args.no_disk_cache else (args.cache_dir or default_cache_dir() / "embeddings")
    profile = getattr(args, "profile", "torch") or "torch"
    if profile != "torch":
        from ..core.backends import make_backend

        backend = make_backend(profile, model_name=args.model, model_type=args.model_type,
                               adapter=getattr(args, "adapter", None), use_click_adapter=clicks)
        return Predictor(backend=backend, cache=EmbeddingCache(disk_dir=disk))
    from ..core.model import default_device, load_model

    model = load_model(args.model, device=args.device or default_device(),
                       model_type=args.model_type, use_click_adapter=clicks)
    if getattr(args, "adapter", None):
        from ..core.adapters import adapters_of, find_adapter

        adapters_of(model).load(find_adapter(args.adapter))
    return Predictor(model, EmbeddingCache(disk_dir=disk))
