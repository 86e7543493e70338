"""Base model vs click adapter on the dev set: the table of docs/accuracy.md.

For every dev dataset and label: box Dice (base, adapter-on model), clicks-only Dice after 1, 3
and 5 clicks and NoC@85 / NoC@90 (cap 20), for the base model and with the shipped click adapter.
Records go to a JSON file so the table can be rebuilt without rerunning.

    python scripts/click_accuracy_table.py --max-slices 3 --json out/clicks_dev.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from napari_medsam.core.click_eval import evaluate_clicks, summarize_clicks  # noqa: E402
from napari_medsam.core.embeddings import EmbeddingCache, default_cache_dir  # noqa: E402
from napari_medsam.core.evaluation import evaluate_boxes, iter_targets, summarize  # noqa: E402
from napari_medsam.core.runtime import RuntimeSpec, build_predictor  # noqa: E402


def run(predictor, args, tag: str) -> list[dict]:
    def targets():
        return iter_targets(args.data, args.datasets, max_slices=args.max_slices)

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
    records = pooled(records, pool)
    by = {m: [r for r in records if r["model"] == m] for m in ("base", "adapter")}
    box = {m: summarize([r for r in by[m] if r["prompt"] == "box"]) for m in by}
    clicks = {m: summarize_clicks(by[m]) for m in by}
    head = ("| dataset | label | n | box base | box adapter | 1 click base / adapter | "
            "3 clicks | 5 clicks | NoC@85 | NoC@90 |")
    lines = [head, "|" + "---|" * 10]
    for (ds, label, prompt), s in clicks["adapter"].items():
        b = clicks["base"].get((ds, label, prompt), {})
        bb = box["base"].get((ds, label, "box"), {}).get("mean", float("nan"))
        ba = box["adapter"].get((ds, label, "box"), {}).get("mean", float("nan"))
        cells = [f"{b.get(f'dice@{k}', float('nan')):.3f} / **{s[f'dice@{k}']:.3f}**"
                 for k in (1, 3, 5)]
        cells += [f"{b.get(n, float('nan')):.1f} / **{s[n]:.1f}**" for n in ("noc85", "noc90")]
        lines.append(f"| {ds} | {label} | {s['n']} | {bb:.3f} | {ba:.3f} | " + " | ".join(cells)
                     + " |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--datasets", default=None, help="comma-separated (default all)")
    p.add_argument("--max-slices", type=int, default=3)
    p.add_argument("--max-clicks", type=int, default=20)
    p.add_argument("--cache", default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    p.add_argument("--from-json", default=None, help="only print the table of saved records")
    p.add_argument("--pool", default="", help="datasets whose labels are pooled into one row")
    args = p.parse_args()
    if args.from_json:
        print(table(json.loads(Path(args.from_json).read_text()), set(args.pool.split(","))))
        return 0
    args.datasets = args.datasets.split(",") if args.datasets else None
    torch.set_num_threads(args.threads)
    cache = EmbeddingCache(disk_dir=args.cache or default_cache_dir() / "embeddings")
    records = []
    for tag, flag in (("adapter", True), ("base", False)):
        predictor = build_predictor(RuntimeSpec(click_adapter=flag), cache)
        records += run(predictor, args, tag)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(records))
    print(table(records, set(args.pool.split(","))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
