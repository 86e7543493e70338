"""Tune propagation's stop rules: record every object's run once, then search thresholds offline.

`record` runs propagation on every object of a split (`bench_propagation.targets`: the training
patients' MRI stacks, or the dev volumes) without stopping, until the mask vanishes or the volume
ends, and keeps per slice the signals a stop rule can read (decoder score, stability, overlap with
the previous slice, area change, intensity drift from the start slice, agreement with the click
decoder) and the mask's overlap with ground truth. A stop rule only cuts such a run short, so the
3D Dice of any rule follows from the record without decoding again.

`search` fits the rule's thresholds on the train record (coordinate search, maximising the mean
over sets of the mean ratio to the bound minus the shortfall of objects under 0.80) and prints the
rule found, the shipped rule and the previous rule on the train and the dev records.

    python benchmarks/tune_propagation.py record --split train --max-per-dataset 30 \
        --cache-dir EMB --out traces_train.json
    python benchmarks/tune_propagation.py record --split dev --cache-dir EMB --out traces_dev.json
    python benchmarks/tune_propagation.py search traces_train.json traces_dev.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_propagation as bench  # noqa: E402

from napari_medsam.core.clicks import interior_point  # noqa: E402
from napari_medsam.core.embeddings import EmbeddingCache  # noqa: E402
from napari_medsam.core.metrics import bbox, dice  # noqa: E402
from napari_medsam.core.propagation import (  # noqa: E402
    PRESETS,
    Intensity,
    PropagationSettings,
    Signals,
    SliceMask,
    decide,
    segment_from,
)
from napari_medsam.core.runtime import RuntimeSpec, build_predictor  # noqa: E402

Rule = Callable[[dict, dict], bool]  # (slice record, object record) -> stop here


@dataclass(frozen=True)
class Candidate:
    """Stop rules to try: propagation's settings, and a floor on the agreement between the box
    mask and the click decoder's mask of the same slice (recorded, not a shipped setting)."""

    settings: PropagationSettings
    min_click_agreement: float = 0.0


def record(args) -> int:
    """Every object's unstopped run with its per-slice signals, written as JSON."""
    cache = EmbeddingCache(memory_bytes=2 << 30, disk_dir=args.cache_dir)
    predictor = build_predictor(RuntimeSpec(profile=args.profile, zoom=True), cache)
    settings = PRESETS["volume"]
    rows, t0 = [], time.perf_counter()
    for t in bench.targets(args.split, predictor, args.max_per_dataset):
        if args.datasets and t.dataset not in args.datasets:
            continue
        rows.append(trace(predictor, t, settings))
        print(f"{t.dataset:16s} {t.name:40s} ({time.perf_counter() - t0:.0f} s)", flush=True)
        Path(args.out).write_text(json.dumps(rows))
    return 0


def trace(predictor, t: bench.Target, settings: PropagationSettings) -> dict:
    """One object: the bound's and the start slice's overlaps, then both directions' slices."""
    zs = np.nonzero(t.truth.any(axis=(1, 2)))[0]
    bound_inter = bound_pred = 0
    for z, mask in bench.bound_masks(predictor, t):
        bound_inter += int((mask & t.truth[z]).sum())
        bound_pred += int(mask.sum())
    z0 = bench.middle_slice(t.truth)
    t.embed(z0)
    first = predictor.predict(box=bbox(t.truth[z0], 5))
    start = SliceMask(first.masks[0], first.low_res_logits[0], float(first.scores[0]),
                      first.window)
    reference = Intensity.of(predictor.image, start.mask)
    row = {"dataset": t.dataset, "object": t.name, "start": z0, "gt_total": int(t.truth.sum()),
           "bound_inter": bound_inter, "bound_pred": bound_pred,
           "start_inter": int((start.mask & t.truth[z0]).sum()),
           "start_area": int(start.mask.sum()), "extent": [int(zs.min()), int(zs.max())],
           "steps": {}}
    for direction, step in (("up", 1), ("down", -1)):
        prev, steps, z = start, [], z0 + step
        while 0 <= z < len(t.truth):
            t.embed(z)
            new = segment_from(predictor, prev, settings)
            steps.append(signals(predictor, new, prev, reference, t.truth[z], z, settings))
            if not new.mask.any():
                break
            prev, z = new, z + step
        row["steps"][direction] = steps
    return row


def signals(predictor, new: SliceMask, prev: SliceMask, reference: Intensity | None,
            truth: np.ndarray, z: int, settings: PropagationSettings) -> dict:
    """What a stop rule can read on this slice (`propagation.Signals`, and the click decoder's
    agreement), and the ground truth's overlap (for scoring)."""
    y, x = interior_point(prev.mask)  # the click decoder's opinion of the same object
    click = predictor.predict(points=np.array([[float(x), float(y)]]), labels=np.array([1]),
                              box=bbox(prev.mask, settings.margin), zoom=False)
    return {"z": z, **asdict(Signals.of(new, prev, reference, predictor.image)),
            "click_agreement": dice(click.masks[0], new.mask),
            "inter": int((new.mask & truth).sum()), "truth": int(truth.sum())}


SIGNALS = [f.name for f in fields(Signals)]


def settings_rule(c: Candidate) -> Rule:
    """`propagation.decide` replayed on recorded signals, and the click-agreement floor."""
    def stop(f: dict, row: dict) -> bool:
        sig = Signals(**{name: f[name] for name in SIGNALS})
        return bool(decide(sig, row["start_area"], c.settings)) or \
            f["click_agreement"] < c.min_click_agreement
    return stop


def score(rows: list[dict], stop: Rule) -> list[dict]:
    """Per object: the 3D Dice of the run cut where `stop` says, its bound and their ratio."""
    out = []
    for r in rows:
        inter, pred = r["start_inter"], r["start_area"]
        reached = [r["start"], r["start"]]
        for direction, steps in r["steps"].items():
            for f in steps:
                if stop(f, r):
                    break
                inter, pred = inter + f["inter"], pred + f["area"]
                reached[0 if direction == "down" else 1] = f["z"]
        propagated = 2 * inter / max(pred + r["gt_total"], 1)
        bound = 2 * r["bound_inter"] / max(r["bound_pred"] + r["gt_total"], 1)
        ring = r["object"].endswith(bench.RINGS)
        out.append({"group": r["dataset"] + ("/rings" if ring else ""), "object": r["object"],
                    "dice": propagated, "bound": bound, "ratio": propagated / max(bound, 1e-6),
                    "extent": r["extent"], "reached": reached})
    return out


def ratios_by_set(scored: list[dict]) -> dict[str, list[float]]:
    """Set -> ratios of its objects, rings left out."""
    groups = defaultdict(list)
    for o in scored:
        if not o["group"].endswith("/rings"):
            groups[o["group"]].append(o["ratio"])
    return dict(sorted(groups.items()))


def per_set(scored: list[dict]) -> dict[str, tuple[float, float]]:
    """Set -> (mean ratio, worst ratio), rings left out."""
    return {g: (float(np.mean(v)), float(np.min(v))) for g, v in ratios_by_set(scored).items()}


def objective(rows: list[dict], c: Candidate) -> float:
    """Mean over sets of the mean ratio, minus each set's mean shortfall under 0.80."""
    groups = ratios_by_set(score(rows, settings_rule(c)))
    return float(np.mean([np.mean(v) - np.mean(np.maximum(0.8 - np.array(v), 0))
                          for v in groups.values()]))


GRID = {
    "min_score": [0.0, 0.4, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75],
    "min_stability": [0.0, 0.4, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75],
    "min_overlap": [0.0, 0.2, 0.3, 0.4, 0.5, 0.55, 0.6, 0.65, 0.7],
    "max_growth": [1.5, 2.0, 3.0, 99.0],
    "max_shift": [2.0, 3.0, 4.0, 5.0, 6.0, None],
}
CLICK = [0.0, 0.3, 0.4, 0.5, 0.6]


def search(rows: list[dict], start: Candidate, sweeps: int = 4) -> Candidate:
    """Coordinate search over GRID and CLICK from `start`, each threshold in turn, until nothing
    improves."""
    best, value = start, objective(rows, start)
    for _ in range(sweeps):
        improved = False
        moves = [(name, v) for name, values in GRID.items() for v in values]
        for name, v in [*moves, *(("click", v) for v in CLICK)]:
            candidate = replace(best, min_click_agreement=v) if name == "click" else \
                replace(best, settings=replace(best.settings, **{name: v}))
            o = objective(rows, candidate)
            if o > value + 1e-5:
                best, value, improved = candidate, o, True
        if not improved:
            break
    return best


def describe(c: Candidate) -> str:
    s = c.settings
    return (f"score {s.min_score} stability {s.min_stability} overlap {s.min_overlap} growth "
            f"{s.max_growth} drift {s.max_shift} click {c.min_click_agreement}")


def show(name: str, rows: list[dict], c: Candidate, worst: float = 0.0) -> None:
    scored = score(rows, settings_rule(c))
    sets = per_set(scored)
    mean = np.mean([m for m, _ in sets.values()])
    print(f"{name:24s} mean {mean:.4f} worst {min(w for _, w in sets.values()):.3f} | " +
          " ".join(f"{g} {m:.3f}/{w:.2f}" for g, (m, w) in sets.items()))
    for o in scored:
        if o["ratio"] < worst and not o["group"].endswith("/rings"):
            print(f"    {o['object']:40s} bound {o['bound']:.3f} Dice {o['dice']:.3f} ratio "
                  f"{o['ratio']:.3f} extent {o['extent']} reached {o['reached']}")


# the rules before this tuning (tuned on the dev volumes): overlap, score, shrink and growth only
PREVIOUS = Candidate(PropagationSettings(min_score=0.5, min_stability=0.0, min_overlap=0.6,
                                         max_growth=2.0, max_shift=None))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("record", help="record every object's unstopped run")
    r.add_argument("--split", default="train", choices=["train", "dev"])
    r.add_argument("--cache-dir", default=None)
    r.add_argument("--max-per-dataset", type=int, default=None)
    r.add_argument("--datasets", nargs="*", default=None)
    r.add_argument("--profile", default="accurate")
    r.add_argument("--out", required=True)
    s = sub.add_parser("search", help="fit the thresholds on a train record, show dev")
    s.add_argument("train")
    s.add_argument("dev", nargs="*")
    args = p.parse_args()
    if args.command == "record":
        return record(args)
    train = json.loads(Path(args.train).read_text())
    dev = [row for f in args.dev for row in json.loads(Path(f).read_text())]
    found = search(train, PREVIOUS)
    shipped = Candidate(PRESETS["volume"])
    for name, rule in (("found", found), ("shipped", shipped), ("previous", PREVIOUS)):
        print(f"{name}: {describe(rule)}")
        show(f"  train ({len(train)})", train, rule)
        if dev:
            show(f"  dev ({len(dev)})", dev, rule, worst=0.85)
    return 0


if __name__ == "__main__":
    sys.exit(main())
