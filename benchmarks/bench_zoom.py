"""Zoom for small objects (`core.zoom`): box Dice with and without it, per dev dataset and label.

Every target of ../shared/data (volumes: --max-slices per label) gets its tight box (+5 px) on the
same predictor twice, zoom off then on; the table gives mean Dice of both, the gain, and how many
targets were small enough to zoom (the rest decode the same either way). Also the extra encoder
calls a zoom costs (one window per small object). Run on the torch profile by
default; window embeddings land in the --cache folder and are reused.

`--clicks` measures the first click instead (the click adapter, zoom on): the window kept as
drawn from the whole-image mask against the window refitted to the zoomed mask
(`ZoomPolicy.refit`); per target the first click's Dice, its wall time with no window cached
yet (the wait a user has on a new object) and the windows it encoded; ratios refitted / kept.

    python benchmarks/bench_zoom.py --cache /work/cache/emb [--json out/zoom_dev.json]
    python benchmarks/bench_zoom.py --clicks --profile accurate --datasets lidc,deeplesion
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from napari_medsam.core.clicks import next_click  # noqa: E402
from napari_medsam.core.embeddings import EmbeddingCache, default_cache_dir  # noqa: E402
from napari_medsam.core.evaluation import BOX_MARGIN, iter_targets  # noqa: E402
from napari_medsam.core.metrics import bbox, dice  # noqa: E402
from napari_medsam.core.predictor import Predictor  # noqa: E402
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


def measure_first_click(predictor, targets, policies: dict[str, ZoomPolicy]) -> list[dict]:
    """The first click on every target under each policy, its windows not cached yet: a fresh
    memory cache holding only the whole image's embedding per run, so each window is encoded."""
    records = []
    for t in targets:
        key = predictor.set_image(t.image, t.preset, t.bounds)
        click = next_click(t.truth)
        points, positive = np.array([[click.x, click.y]], float), np.array([1])
        row = {"dataset": t.dataset, "label": t.label, "case": t.case, "slice": t.slice}
        for name, policy in policies.items():
            cache = EmbeddingCache()
            cache.put(key, predictor.embedding)
            cold = Predictor(backend=predictor.backend, cache=cache, zoom=policy)
            cold.set_image(t.image, t.preset, t.bounds)  # found in the cache: no encoder run
            start = time.perf_counter()
            pred = cold.predict(points=points, labels=positive)
            row[name] = {"dice": dice(pred.masks[0], t.truth), "s": time.perf_counter() - start,
                         "windows": cold.encoder_calls, "zoomed": pred.window is not None}
        records.append(row)
    return records


def click_table(records: list[dict], names: tuple[str, str]) -> str:
    """Per dataset: first-click Dice, mean wait and windows encoded, kept vs refitted."""
    base, new = names
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        groups[r["dataset"]].append(r)
    lines = [f"| dataset | n | zoomed | 1-click Dice {base} | {new} | mean wait s {base} | "
             f"{new} | ratio | windows {base} | {new} |", "|---" * 10 + "|"]
    for ds, rs in sorted(groups.items()) + [("all", records)]:
        d = [np.mean([r[n]["dice"] for r in rs]) for n in names]
        w = [np.mean([r[n]["s"] for r in rs]) for n in names]
        k = [sum(r[n]["windows"] for r in rs) for n in names]
        lines.append(f"| {ds} | {len(rs)} | {sum(r[new]['zoomed'] for r in rs)} | {d[0]:.3f} | "
                     f"{d[1]:.3f} | {w[0]:.2f} | {w[1]:.2f} | {w[1] / w[0]:.2f}x | {k[0]} | "
                     f"{k[1]} |")
    return "\n".join(lines)


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
    p.add_argument("--clicks", action="store_true",
                   help="the first click, window kept vs refitted (click adapter)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    cache = EmbeddingCache(disk_dir=args.cache or default_cache_dir() / "embeddings")
    policy = ZoomPolicy(max_extent=args.max_extent, context=args.context)
    datasets = args.datasets.split(",") if args.datasets else None
    targets = iter_targets(args.data, datasets, max_slices=args.max_slices)
    t0 = time.monotonic()
    if args.clicks:
        predictor = build_predictor(RuntimeSpec(profile=args.profile), cache)
        warm = np.random.default_rng(0).random((256, 256), np.float32)
        predictor.set_image(warm)  # the sessions open before anything is timed
        predictor.predict(points=np.array([[128.0, 128.0]]), labels=np.array([1]))
        policies = {"kept": replace(policy, refit=0.0), "refitted": policy}
        records = measure_first_click(predictor, targets, policies)
        text = click_table(records, tuple(policies))
    else:
        predictor = build_predictor(RuntimeSpec(profile=args.profile, adapter="none"), cache)
        records = measure(predictor, targets, policy)
        text = table(records)
    print(f"{len(records)} targets in {time.monotonic() - t0:.0f} s; profile {args.profile}; "
          f"policy {policy}")
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(records))
    return 0

if __name__ == "__main__":
    sys.exit(main())
