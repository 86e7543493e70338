"""`napari-medsam eval DATA_DIR [--json OUT]`: Dice against ground truth from a manifest."""

from __future__ import annotations

import argparse
import json

from .common import add_model_options, make_predictor


def register(sub) -> None:
    p = sub.add_parser("eval", help="Dice against ground truth for every image/slice/label",
                       description="Evaluate on a folder with manifest.json. For every 2D image, "
                       "every volume slice containing a label, and every label, the prompt is the "
                       "label's tight box grown by 5 pixels. Prints mean Dice per dataset and label.")
    p.add_argument("data_dir", help="folder with manifest.json (e.g. ../shared/data)")
    p.add_argument("--prompt", default="box", choices=["box"], help="prompt kind to simulate")
    p.add_argument("--datasets", default=None, help="comma-separated dataset names (default all)")
    p.add_argument("--max-cases", type=int, default=None, help="at most N cases per dataset")
    p.add_argument("--max-slices", type=int, default=None,
                   help="at most N slices per label in a volume (evenly spread)")
    p.add_argument("--json", default=None, help="write one record per evaluated mask here")
    add_model_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..core.evaluation import evaluate_boxes, format_summary, iter_targets

    predictor = make_predictor(args)
    datasets = args.datasets.split(",") if args.datasets else None
    targets = iter_targets(args.data_dir, datasets, args.max_cases, args.max_slices)
    bar = tqdm(unit="mask", desc="eval")
    records = evaluate_boxes(predictor, targets, progress=lambda i, t: bar.update(1))
    bar.close()
    print(format_summary(records))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(records, handle, indent=1)
        print(f"wrote {len(records)} records to {args.json}")
    return 0
