"""Options shared by several verbs: model, device, preset, cache."""

from __future__ import annotations

import argparse


def add_model_options(p: argparse.ArgumentParser, default_profile: str = "auto") -> None:
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
    p.add_argument("--profile", default=default_profile,
                   choices=["auto", "torch", "accurate", "balanced", "fast"],
                   help="how to run the model: auto (torch on a GPU when torch sees one, else the "
                        "most accurate ONNX Runtime profile within the latency budget on this "
                        "machine), torch (needs the [torch] extra), or ONNX Runtime on the CPU: "
                        "accurate (fp32, the torch masks), balanced (int8 decoder), fast (bf16 "
                        "encoder on OpenVINO where the CPU has bf16, else int8); see "
                        f"docs/performance.md (default: {default_profile})")


def add_plane_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plane", default="axial", choices=["axial", "coronal", "sagittal", "array"],
                   help="how a volume is sliced: the plane, found from the file's orientation and "
                        "shown the radiological way (axial: anterior at the top, the patient's "
                        "right on the left, slice index growing towards the head; the same slices "
                        "and pixels as napari and `propagate`); 'array' keeps the file's own voxel "
                        "order. Slice numbers and x/y are pixels of these slices (default axial)")


def spec_from_args(args, profile: str | None = None):
    """The `RuntimeSpec` the model options describe (`profile` overrides --profile, e.g. for
    verbs that train and need the torch model)."""
    from ..core.runtime import RuntimeSpec

    adapter = getattr(args, "adapter", None)
    if adapter is None and getattr(args, "no_click_adapter", False):
        adapter = "none"
    return RuntimeSpec(
        model=args.model, model_type=args.model_type, adapter=adapter,
        click_adapter=False if getattr(args, "no_click_adapter", False) else None,
        gate=False if getattr(args, "no_adapter_gate", False) else None,
        profile=profile or getattr(args, "profile", None) or "torch",
        device=args.device, threads=getattr(args, "threads", None),
    )


def make_predictor(args, profile: str | None = None):
    """Predictor from the parsed model options, through `core.runtime` (an ONNX profile never
    imports torch once the models are exported)."""
    from ..core.runtime import build_predictor, default_cache

    cache = default_cache(args.cache_dir, disk=not args.no_disk_cache)
    return build_predictor(spec_from_args(args, profile), cache)
