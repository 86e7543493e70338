"""Click accuracy on the dev set, model against model: the tables of docs/accuracy.md.

For every dev dataset and label: box Dice, and clicks-only Dice after 1, 3 and 5 clicks with
NoC@85 / NoC@90 (cap --max-clicks), for each model given with --models NAME=WHAT:
  base            LiteMedSAM without adapter
  shipped         the click adapter shipped in the package (the default)
  <folder>        a LoRA adapter folder (peft), run like the shipped one
  moe:<folder>    a mixture-of-experts adapter (training.moe; torch only)
Clicks go through the predictor as a user's do (zoom windows for small objects included, as the
predictor is built by `core.runtime`). Records go to a JSON file so the table can be rebuilt.

    python scripts/click_accuracy_table.py --models base=base old=shipped new=/path/click \\
        --max-slices 3 --json out/clicks_dev.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from napari_medsam.core.click_eval import evaluate_clicks, summarize_clicks  # noqa: E402
from napari_medsam.core.embeddings import EmbeddingCache, default_cache_dir  # noqa: E402
from napari_medsam.core.evaluation import (  # noqa: E402
    evaluate_boxes,
    filter_pairs,
    iter_targets,
    load_manifest,
    summarize,
)
from napari_medsam.core.runtime import RuntimeSpec, build_predictor  # noqa: E402


def predictor_for(what: str, cache, profile: str, zoom: bool):
    """A predictor for one --models entry."""
    if what.startswith("moe:"):
        from napari_medsam.core.predictor import Predictor
        from napari_medsam.core.runtime import load_torch
        from napari_medsam.core.training import moe

        model = load_torch(RuntimeSpec(profile="torch", click_adapter=False))
        moe.load(model, what[4:])
        return Predictor(model, cache, zoom=zoom)
    adapter = {"base": "none", "shipped": None}.get(what, what)
    return build_predictor(RuntimeSpec(profile=profile, adapter=adapter, zoom=zoom), cache)


def spread_pairs(data: str, datasets: list[str] | None, n: int | None) -> list[dict]:
    """Every dataset's pairs, or `n` of them evenly spaced in manifest order (which is by
    patient), so a few pairs still cover many patients."""
    by_set: dict[str, list[dict]] = {}
    for pair in filter_pairs(load_manifest(data), datasets):
        by_set.setdefault(pair["dataset"], []).append(pair)
    out = []
    for pairs in by_set.values():
        if n is not None and len(pairs) > n:
            pairs = [pairs[i] for i in np.linspace(0, len(pairs) - 1, n).round().astype(int)]
        out += pairs
    return out


def run(predictor, args, tag: str) -> list[dict]:
    chosen = spread_pairs(args.data, args.datasets, args.max_cases)

    def targets():
        return iter_targets(args.data, pairs=chosen, max_slices=args.max_slices)

    t0 = time.monotonic()
    records = [{**r, "model": tag} for r in evaluate_boxes(predictor, targets())]
    records += [{**r, "model": tag} for r in evaluate_clicks(predictor, targets(),
                                                             max_clicks=args.max_clicks)]
    print(f"{tag}: {len(records)} records in {time.monotonic() - t0:.0f} s", flush=True)
    return records


def pooled(records: list[dict], datasets: set[str]) -> list[dict]:
    """Records of `datasets` with every label pooled into one row ("all": many small labels)."""
    return [{**r, "label": "all"} if r["dataset"] in datasets else r for r in records]


def table(records: list[dict], pool: set[str] = frozenset()) -> str:
    """One row per dataset and label; cells "a / b / c" in the order of the models."""
    records = pooled(records, pool)
    models = list(dict.fromkeys(r["model"] for r in records))
    box = {m: summarize([r for r in records if r["model"] == m and r["prompt"] == "box"])
           for m in models}
    clicks = {m: summarize_clicks([r for r in records if r["model"] == m]) for m in models}
    order = " / ".join(models)
    head = (f"| dataset | label | n | box ({order}) | 1 click | 3 clicks | 5 clicks | NoC@85 | "
            "NoC@90 |")
    lines = [head, "|" + "---|" * 9]
    for key in clicks[models[-1]]:
        ds, label, _ = key

        def cell(name: str, fmt: str, key=key) -> str:
            values = [clicks[m].get(key, {}).get(name, float("nan")) for m in models]
            return " / ".join(format(v, fmt) for v in values)

        boxes = " / ".join(f"{box[m].get((ds, label, 'box'), {}).get('mean', float('nan')):.3f}"
                           for m in models)
        n = clicks[models[-1]][key]["n"]
        lines.append(f"| {ds} | {label} | {n} | {boxes} | {cell('dice@1', '.3f')} | "
                     f"{cell('dice@3', '.3f')} | {cell('dice@5', '.3f')} | "
                     f"{cell('noc85', '.1f')} | {cell('noc90', '.1f')} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--models", nargs="+", default=["base=base", "adapter=shipped"],
                   help="NAME=WHAT pairs: base, shipped, an adapter folder, moe:<folder>")
    p.add_argument("--datasets", default=None, help="comma-separated (default all)")
    p.add_argument("--max-slices", type=int, default=3)
    p.add_argument("--max-cases", type=int, default=None,
                   help="at most this many pairs per dataset, evenly spread over its patients "
                        "(manifest order)")
    p.add_argument("--max-clicks", type=int, default=20)
    p.add_argument("--profile", default="accurate", help="runtime profile (moe: torch)")
    p.add_argument("--no-zoom", action="store_true")
    p.add_argument("--cache", default=None)
    p.add_argument("--json", default=None)
    p.add_argument("--from-json", default=None, help="only print the table of saved records")
    p.add_argument("--pool", default="", help="datasets whose labels are pooled into one row")
    args = p.parse_args()
    if args.from_json:
        print(table(json.loads(Path(args.from_json).read_text()), set(args.pool.split(","))))
        return 0
    args.datasets = args.datasets.split(",") if args.datasets else None
    cache = EmbeddingCache(disk_dir=args.cache or default_cache_dir() / "embeddings")
    records = json.loads(Path(args.json).read_text()) if args.json and Path(
        args.json).is_file() else []
    done = {r["model"] for r in records}
    for entry in args.models:
        tag, what = entry.split("=", 1)
        if tag in done:
            continue
        records += run(predictor_for(what, cache, args.profile, not args.no_zoom), args, tag)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(records))
    print(table(records, set(args.pool.split(","))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
