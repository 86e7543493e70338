"""`napari-medsam train-head DATA --kind patch|shape --labels 1:LV ... -o OUT`."""

from __future__ import annotations

import argparse

from ..core import checks
from .common import arg


def register(sub) -> None:
    from .common import add_model_options

    p = sub.add_parser("train-head", help="train an automatic-segmentation head on labelled images",
                       description="Train a small head (under 1 M parameters) that segments the "
                       "given structures with no click. DATA is a folder with a manifest.json of "
                       "image/mask pairs, or with images/ and masks/ holding files of the same "
                       "names. Embeddings are cached, so a second run starts at once.")
    p.add_argument("data", help="folder of labelled 2D images (training patients only)")
    p.add_argument("--kind", required=True, choices=["patch", "shape"],
                   help="patch: patch-prompt generator (any object); shape: mixture of shape "
                        "experts (anatomy with a stable shape)")
    p.add_argument("--labels", nargs="+", required=True, metavar="VALUE:NAME",
                   help="the structures to learn, e.g. 1:LV 2:myocardium 3:LA")
    p.add_argument("-o", "--output", required=True, help="head folder to write")
    p.add_argument("--dataset", default=None, help="only pairs of this dataset in the manifest")
    p.add_argument("--max-images", type=arg(checks.whole), default=None,
                   help="train on at most this many images (different patients first)")
    p.add_argument("--val", default=None,
                   help="folder of OTHER patients to validate on and pick the mode with")
    p.add_argument("--patch-size", type=int, default=16, choices=[8, 16, 32, 64],
                   help="patch head: 8, 16, 32 or 64 px")
    p.add_argument("--experts", type=arg(checks.whole), default=8,
                   help="shape head: number of shape templates")
    p.add_argument("--map-steps", type=arg(checks.whole, minimum=0), default=None,
                   help="steps of the head-map phase")
    p.add_argument("--decoder-steps", type=arg(checks.whole, minimum=0), default=None,
                   help="steps of the through-the-decoder phase")
    p.add_argument("--keep-all-regions", action="store_true",
                   help="keep every region of a structure (default: its largest only)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=arg(checks.whole), default=None,
                   help="CPU threads for training")
    add_model_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..core.errors import require_torch

    require_torch("Training a head")
    from ..core.autoseg import HeadTrainConfig
    from ..core.autoseg.pipeline import fit_head, parse_labels
    from .common import make_predictor

    structures, names = parse_labels(args.labels)
    checks.output_folder(args.output, "head folder")  # before training: the result is kept
    config = HeadTrainConfig(kind=args.kind, patch_size=args.patch_size, experts=args.experts,
                         seed=args.seed, threads=args.threads)
    if args.map_steps is not None:
        config.map_steps = args.map_steps
    if args.decoder_steps is not None:
        config.decoder_steps = args.decoder_steps
    _, meta = fit_head(make_predictor(args, profile="torch"), args.data, structures, names, config,
                       out=args.output, dataset=args.dataset, max_images=args.max_images,
                       val=args.val, keep_largest=not args.keep_all_regions, progress=print)
    print(f"head written to {args.output} ({meta['training_images']} images, "
          f"{meta['training_seconds']} s, mode {meta['mode']})")
    return 0
