"""`napari-medsam eval DATA_DIR [--prompt box|clicks|box+clicks] [--json OUT]`: Dice vs truth."""

from __future__ import annotations

import argparse
import json

from ..core import checks
from .common import add_model_options, arg, make_predictor


def register(sub) -> None:
    p = sub.add_parser("eval", help="Dice against ground truth for every image/slice/label",
                       description="Evaluate on a folder with manifest.json. For every 2D image, "
                       "every volume slice containing a label, and every label, the prompt is the "
                       "label's tight box grown by 5 pixels (--prompt box) or simulated clicks. "
                       "Prints mean Dice per dataset and label.")
    p.add_argument("data_dir", help="folder with manifest.json (e.g. ../shared/data)")
    p.add_argument("--prompt", default="box", choices=["box", "clicks", "box+clicks"],
                   help="prompt kind to simulate: the box; clicks one by one (first at the most "
                        "interior point, then in the largest error region, previous mask fed "
                        "back), reporting Dice after 1/3/5 clicks and NoC@85/90; or a box then "
                        "clicks")
    p.add_argument("--max-clicks", type=arg(checks.whole), default=20,
                   help="click cap for NoC (clicks needed for 85%%/90%% Dice), default 20")
    p.add_argument("--datasets", default=None, help="comma-separated dataset names (default all)")
    p.add_argument("--max-cases", type=arg(checks.whole), default=None,
                   help="at most N cases per dataset")
    p.add_argument("--max-slices", type=arg(checks.whole), default=None,
                   help="at most N slices per label in a volume (evenly spread)")
    p.add_argument("--json", default=None, help="write one record per evaluated mask here")
    add_model_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..core.atomic import atomic_text
    from ..core.click_eval import evaluate_clicks, format_click_summary
    from ..core.evaluation import (
        count_targets,
        evaluate_boxes,
        format_summary,
        iter_targets,
        select_pairs,
    )

    datasets = [d for d in args.datasets.split(",") if d] if args.datasets else None
    if args.json:  # before the run: a long evaluation is never lost to a bad path
        checks.output_file(args.json, what="--json file")
    pairs = select_pairs(args.data_dir, datasets, args.max_cases)
    total = count_targets(args.data_dir, pairs, args.max_slices)  # reads every pair once
    predictor = make_predictor(args)
    targets = iter_targets(args.data_dir, max_slices=args.max_slices, pairs=pairs)
    bar = tqdm(total=total, unit="mask", desc="eval")
    if args.prompt == "box":
        records = evaluate_boxes(predictor, targets, progress=lambda i, t: bar.update(1))
    else:
        records = evaluate_clicks(predictor, targets, with_box=args.prompt == "box+clicks",
                                  max_clicks=args.max_clicks, progress=lambda i, t: bar.update(1))
    bar.close()
    print(format_summary(records) if args.prompt == "box" else format_click_summary(records))
    if args.json:
        atomic_text(args.json, json.dumps(records, indent=1))
        print(f"wrote {len(records)} records to {args.json}")
    return 0
