"""Zoom for small objects (`core.zoom`): box Dice with and without it, per dev dataset and label.

Every target of ../shared/data (volumes: --max-slices per label) gets its tight box (+5 px) on the
same predictor twice, zoom off then on; the table gives mean Dice of both, the gain, and how many
targets were small enough to zoom (the rest decode the same either way). Also the extra encoder
calls a zoom costs (one window per small object). Run on the torch profile by
default; window embeddings land in the --cache folder and are reused.

    python benchmarks/bench_zoom.py --cache /work/cache/emb [--json out/zoom_dev.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from napari_medsam.core.embeddings import EmbeddingCache, default_cache_dir  # noqa: E402
from napari_medsam.core.evaluation import BOX_MARGIN, iter_targets  # noqa: E402
from napari_medsam.core.metrics import bbox, dice  # noqa: E402
from napari_medsam.core.runtime import RuntimeSpec, build_predictor  # noqa: E402
from napari_medsam.core.zoom import ZoomPolicy  # noqa: E402


def measure(predictor, targets, policy: ZoomPolicy) -> list[dict]:
    """Box Dice of every target with zoom off and on (same predictor, same embedding)."""
    records = []
    for t in targets:
        predictor.set_image(t.image, t.preset, t.bounds)
        box = bbox(t.truth, BOX_MARGIN)
        plain = predictor.predict(box=box, zoom=False)
        zoomed = predictor.predict(box=box, zoom=policy)
        records.append({"dataset": t.dataset, "label": t.label, "case": t.case, "slice": t.slice,
                        "off": dice(plain.masks[0], t.truth), "on": dice(zoomed.masks[0], t.truth),
                        "zoomed": zoomed.window is not None})
    return records


def table(records: list[dict]) -> str:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        groups[(r["dataset"], r["label"])].append(r)
    lines = ["| dataset | label | n | zoomed | box Dice, no zoom | with zoom | gain |",
             "|---|---|---|---|---|---|---|"]
    for (ds, label), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        off, on = np.mean([r["off"] for r in rs]), np.mean([r["on"] for r in rs])
        lines.append(f"| {ds} | {label} | {len(rs)} | {sum(r['zoomed'] for r in rs)} | "
                     f"{off:.3f} | {on:.3f} | {on - off:+.3f} |")
    off = np.mean([r["off"] for r in records])
    on = np.mean([r["on"] for r in records])
    lines.append(f"| all | | {len(records)} | {sum(r['zoomed'] for r in records)} | {off:.3f} | "
                 f"{on:.3f} | {on - off:+.3f} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--datasets", default=None, help="comma-separated (default all)")
    p.add_argument("--max-slices", type=int, default=3)
    p.add_argument("--profile", default="torch")
    p.add_argument("--cache", default=None)
    p.add_argument("--max-extent", type=float, default=ZoomPolicy.max_extent)
    p.add_argument("--context", type=float, default=ZoomPolicy.context)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    cache = EmbeddingCache(disk_dir=args.cache or default_cache_dir() / "embeddings")
    predictor = build_predictor(RuntimeSpec(profile=args.profile, adapter="none"), cache)
    policy = ZoomPolicy(max_extent=args.max_extent, context=args.context)
    datasets = args.datasets.split(",") if args.datasets else None
    t0 = time.monotonic()
    records = measure(predictor, iter_targets(args.data, datasets, max_slices=args.max_slices),
                      policy)
    print(f"{len(records)} targets in {time.monotonic() - t0:.0f} s; policy {policy}")
    print(table(records))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
