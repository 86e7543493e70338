"""`napari-medsam export [--profile P] [--out DIR]`: build the ONNX models ahead of time.

Exports happen on first use anyway; running this once (e.g. when installing on a laptop or in
Slicer) moves the minute of export + quantization out of the first annotation.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..core.errors import InputError


def register(sub) -> None:
    p = sub.add_parser("export", help="export the model to ONNX (fp32 and int8) for fast CPU use",
                       description="Export the encoder and decoder to ONNX for the execution "
                       "profiles (accurate, balanced, fast) into the per-user cache, so later "
                       "runs start without torch.")
    p.add_argument("--profile", default="all",
                   choices=["all", "accurate", "balanced", "fast"],
                   help="which profile's models to build (default: all)")
    p.add_argument("--model", default="litemedsam",
                   help="'litemedsam' (built in) or the path of a SAM/MedSAM checkpoint")
    p.add_argument("--model-type", default=None,
                   choices=["litemedsam", "sam_vit_b", "medsam_vit_b"])
    p.add_argument("--adapter", default=None,
                   help="a LoRA adapter folder: its decoder is exported merged, keyed by its hash")
    p.add_argument("--no-click-adapter", action="store_true",
                   help="export without the shipped click adapter")
    p.add_argument("--out", default=None, help="folder (default: <user cache>/onnx)")
    p.add_argument("--static", action="store_true",
                   help="also build the static int8 encoder (calibrated; see docs/performance.md)")
    p.add_argument("--calibration-dir", default=None,
                   help="images to calibrate the static int8 encoder on (default: the ranges "
                        "shipped with the package, measured on real training images)")
    p.add_argument("--save-ranges", default=None,
                   help="write the calibration ranges measured on --calibration-dir to this file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..core import checks
    from ..core.backends.export import ensure_decoder, ensure_encoder, onnx_dir
    from ..core.backends.weights import resolve_model
    from ..core.profiles import ORDER, PROFILES, get_profile

    if args.out:  # before the minute of export
        checks.output_folder(args.out, "ONNX folder")
    if args.save_ranges:
        checks.output_file(args.save_ranges, what="--save-ranges file")
    if args.calibration_dir and not Path(args.calibration_dir).is_dir():
        raise InputError(f"--calibration-dir {args.calibration_dir} is not a folder of images.")
    info = resolve_model(args.model, args.model_type, args.adapter,
                         False if args.no_click_adapter else None)
    names = ORDER if args.profile == "all" else (args.profile,)
    paths = []
    for name in names:
        # as the profile runs here, and its onnxruntime-only form (for machines without OpenVINO)
        for prof in dict.fromkeys([get_profile(name), PROFILES[name]]):
            paths.append(ensure_encoder(info, prof.encoder, args.out))
            paths.append(ensure_decoder(info, prof.decoder, folder=args.out))
            if info.decoder_tag and info.box_base:
                paths.append(ensure_decoder(info.base, prof.decoder, folder=args.out))
    if args.static or args.calibration_dir:
        if args.calibration_dir:
            from ..core.backends.export import encoder_file

            encoder_file(info, "int8-static", args.out).unlink(missing_ok=True)
            ensure_encoder(info, "fp32", args.out)
            from ..core.backends.quantize import quantize_encoder

            target = encoder_file(info, "int8-static", args.out)
            quantize_encoder(encoder_file(info, "fp32", args.out), target, info, "int8-static",
                             args.calibration_dir, args.save_ranges)
            paths.append(target)
        else:
            paths.append(ensure_encoder(info, "int8-static", args.out))
    print(f"ONNX models in {onnx_dir(args.out)}:")
    for path in dict.fromkeys(paths):
        print(f"  {path.name}  ({path.stat().st_size / 2**20:.1f} MiB)")
    return 0
