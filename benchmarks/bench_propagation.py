"""Propagation measured on volumes it was not tuned on: tune on ../shared/train, report on dev.

For every object (a label of a volume), propagation starts from one ground-truth box (+5 px) on
the object's middle slice and runs up and down (Session.propagate's core, `propagation.
propagate`); its 3D Dice is compared with the upper bound, a ground-truth box on every slice of
the object. Reported per object: propagated Dice, bound, their ratio, slices reached vs the true
extent; per dataset the mean ratio and the worst one.

Volumes:
  train (tuning)  ACDC, MS-CMR, CHAOS, LA stacks rebuilt from the training patients' slices
                  (`core.slice_stacks`: consecutive slices of a patient, LA every 3rd slice);
  dev (report)    DeepLesion CT lesions, BraTS whole tumour, TotalSegmentator organs (silver
                  labels), and the dev patients' ACDC, MS-CMR, CHAOS, LA stacks.
Interpolation (`Interpolate`) is measured the same way: ground truth on the slices at 1/4 and 3/4
of the extent, Dice on the slices between. The stop rules' thresholds are fitted on the train
stacks by benchmarks/tune_propagation.py (recorded runs); this benchmark runs the rules for real.

    python benchmarks/bench_propagation.py --cache-dir EMB --split train --max-per-dataset 30
    python benchmarks/bench_propagation.py --cache-dir EMB --split dev --variants grid
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from napari_medsam.core.embeddings import EmbeddingCache  # noqa: E402
from napari_medsam.core.evaluation import load_manifest  # noqa: E402
from napari_medsam.core.intensity import get_preset, suggest_preset  # noqa: E402
from napari_medsam.core.metrics import bbox, dice  # noqa: E402
from napari_medsam.core.propagation import (  # noqa: E402
    PRESETS,
    SliceMask,
    interpolate,
    propagate,
)
from napari_medsam.core.runtime import RuntimeSpec, build_predictor  # noqa: E402
from napari_medsam.core.slice_stacks import stacks  # noqa: E402
from napari_medsam.core.volume import open_image  # noqa: E402
from napari_medsam.core.zoom import ZoomPolicy  # noqa: E402

SHARED = REPO.parent / "shared"
MRI = get_preset("mri")
STACKS = {"acdc": 1, "mscmr": 1, "chaos_t2": 1, "la_mri": 3}  # dataset -> slice step
VOLUMES = {  # dataset -> (object name, label test)
    "deeplesion": [("lesion", lambda lab: lab == 1)],
    "brats2015": [("whole tumour", lambda lab: lab > 0)],
    "totalseg_example": [(name, lambda lab, v=v: lab == v) for name, v in
                         [("spleen", 1), ("kidney_right", 2), ("kidney_left", 3), ("liver", 5),
                          ("stomach", 6)]],
}
NAMES = {"acdc": "RV myocardium LV", "mscmr": "RV myocardium LV",
         "chaos_t2": "liver kidney_right kidney_left spleen", "la_mri": "atrium"}


@dataclass
class Target:
    """One object of one volume, and how its slices are embedded."""

    dataset: str
    name: str
    truth: np.ndarray  # bool (Z, H, W)
    embed: Callable[[int], object]


def targets(split: str, predictor, max_per_dataset: int | None) -> Iterator[Target]:
    folder = SHARED / ("train" if split == "train" else "data")
    for dataset, step in STACKS.items():
        found = stacks(folder, [dataset], step=step)[:max_per_dataset]
        for st in found:
            def embed(z: int, st=st) -> str:  # as the 2D slices were embedded: percentiles
                return predictor.set_image(st.image[z], MRI)

            for value, name in enumerate(NAMES[dataset].split(), start=1):
                truth = st.labels == value
                if truth.any(axis=(1, 2)).sum() >= 2:
                    yield Target(dataset, f"{st.name}/{name}", truth, embed)
    if split != "dev":
        return
    for pair in load_manifest(folder):
        if pair["dataset"] not in VOLUMES:
            continue
        vol = open_image(folder / pair["image"])
        labels = vol.labels_from_file(folder / pair["mask"])
        preset = suggest_preset(vol.data, pair.get("modality", ""))
        bounds = preset.bounds(vol.data)

        def embed(z: int, vol=vol, preset=preset, bounds=bounds) -> str:
            return predictor.set_image(vol.data[z], preset, bounds)

        for name, test in VOLUMES[pair["dataset"]]:
            truth = test(labels)
            if truth.any(axis=(1, 2)).sum() >= 2:
                yield Target(pair["dataset"], f"{pair['case']}/{name}", truth, embed)


def middle_slice(truth: np.ndarray) -> int:
    zs = np.nonzero(truth.any(axis=(1, 2)))[0]
    return int(zs[np.argmin(np.abs(zs - (zs.min() + zs.max()) / 2))])


def bound_masks(predictor, t: Target):
    """(z, mask) of a ground-truth box (+5 px) on every slice of the object: the bound's slices."""
    for z in np.nonzero(t.truth.any(axis=(1, 2)))[0]:
        t.embed(int(z))
        yield int(z), predictor.predict(box=bbox(t.truth[z], 5)).masks[0]


def upper_bound(predictor, t: Target) -> float:
    """3D Dice of a ground-truth box (+5 px) on every slice of the object."""
    pred = np.zeros_like(t.truth)
    for z, mask in bound_masks(predictor, t):
        pred[z] = mask
    return dice(pred, t.truth)


def propagated(predictor, t: Target, settings) -> dict:
    z = middle_slice(t.truth)
    t.embed(z)
    first = predictor.predict(box=bbox(t.truth[z], 5))
    pred = np.zeros_like(t.truth)
    pred[z] = first.masks[0]
    start = SliceMask(first.masks[0], first.low_res_logits[0], float(first.scores[0]),
                      first.window)
    result = propagate(predictor, t.embed, len(t.truth), z, start,
                       on_mask=lambda k, m: pred.__setitem__(k, m), settings=settings)
    zs = np.nonzero(t.truth.any(axis=(1, 2)))[0]
    return {"dice": dice(pred, t.truth), "extent": [int(zs.min()), int(zs.max())],
            "reached": list(result.extent), "stopped": result.stopped}


def interpolated(predictor, t: Target) -> float:
    zs = np.nonzero(t.truth.any(axis=(1, 2)))[0]
    z0, z1 = int(zs[len(zs) // 4]), int(zs[(3 * len(zs)) // 4])
    if z1 - z0 < 2:
        return float("nan")
    pred = np.zeros_like(t.truth)
    interpolate(predictor, t.embed, z0, t.truth[z0], z1, t.truth[z1],
                on_mask=lambda k, m: pred.__setitem__(k, m))
    return dice(pred[z0 + 1:z1], t.truth[z0 + 1:z1])


def variants(which: str) -> dict:
    """Settings compared: "rules" = the shipped rules; "grid" = those, the rules before the
    issue-22 tuning, and the shipped rules with one signal changed at a time (the thresholds
    themselves are fitted by benchmarks/tune_propagation.py on recorded runs)."""
    base = PRESETS["volume"]
    out = {"shipped": (base, None)}
    if which == "rules":
        return out
    if which == "prompts":  # the click adapter's prompts: box + deepest-point click (+ mask)
        out["shipped + click"] = (replace(base, use_point=True), None)
        out["shipped + click + previous mask"] = (replace(base, use_point=True, use_mask=True),
                                                  None)
        return out
    out["previous (overlap 0.6, score 0.5, growth 2)"] = (replace(
        base, min_score=0.5, min_stability=0.0, min_overlap=0.6, max_growth=2.0,
        max_shift=None), None)
    out["shipped without the drift stop"] = (replace(base, max_shift=None), None)
    out["shipped with overlap 0.6"] = (replace(base, min_overlap=0.6), None)
    out["shipped, zoom on small objects"] = (replace(base, zoom=True), None)
    return out


RINGS = ("myocardium",)  # a box cannot say a ring: its "bound" is no bound (reported apart)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--split", default="train", choices=["train", "dev"])
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--variants", default="grid", choices=["grid", "rules", "prompts"])
    p.add_argument("--max-per-dataset", type=int, default=None, help="volumes per stack set")
    p.add_argument("--datasets", nargs="*", default=None, help="only these sets (default: all)")
    p.add_argument("--profile", default="accurate")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "propagation.json"))
    args = p.parse_args()
    cache = EmbeddingCache(memory_bytes=2 << 30, disk_dir=args.cache_dir)
    predictor = build_predictor(RuntimeSpec(profile=args.profile, zoom=True), cache)
    rows = []
    t0 = time.perf_counter()
    for t in targets(args.split, predictor, args.max_per_dataset):
        if args.datasets and t.dataset not in args.datasets:
            continue
        bound = upper_bound(predictor, t)
        row = {"dataset": t.dataset, "object": t.name, "bound": round(bound, 4),
               "interpolate": round(interpolated(predictor, t), 4)}
        for name, (settings, zoom) in variants(args.variants).items():
            keep = predictor.zoom
            predictor.zoom = keep if zoom is None else (ZoomPolicy() if zoom else None)
            out = propagated(predictor, t, settings)
            predictor.zoom = keep
            row[name] = {**out, "dice": round(out["dice"], 4),
                         "ratio": round(out["dice"] / max(bound, 1e-6), 4)}
        rows.append(row)
        shipped = row["shipped"]
        print(f"{t.dataset:16s} {t.name:40s} bound {bound:.3f} prop {shipped['dice']:.3f} "
              f"ratio {shipped['ratio']:.2f} extent {shipped['extent']} reached "
              f"{shipped['reached']}  ({time.perf_counter() - t0:.0f} s)", flush=True)
        partial = Path(args.out).with_suffix(".partial.json")  # kept if the run is stopped
        partial.write_text(json.dumps({args.split: rows}, indent=1))
    summary = summarize(rows, list(variants(args.variants)))
    print(table(summary))
    print(ranking(rows, list(variants(args.variants))))
    results = json.loads(Path(args.out).read_text()) if Path(args.out).is_file() else {}
    results[args.split] = {"summary": summary, "objects": rows}
    Path(args.out).write_text(json.dumps(results, indent=1))
    Path(args.out).with_suffix(".partial.json").unlink(missing_ok=True)
    return 0


def summarize(rows: list[dict], names: list[str]) -> dict:
    """Per dataset (rings apart: "acdc/rings"): mean and worst ratio to the bound, Dice."""
    per: dict[str, dict] = defaultdict(dict)
    for r in rows:
        r["group"] = r["dataset"] + ("/rings" if r["object"].endswith(RINGS) else "")
    for ds in sorted({r["group"] for r in rows}):
        sel = [r for r in rows if r["group"] == ds]
        for name in names:
            ratios = [r[name]["ratio"] for r in sel]
            per[ds][name] = {"n": len(sel), "mean_ratio": round(float(np.mean(ratios)), 4),
                             "min_ratio": round(float(np.min(ratios)), 4),
                             "dice": round(float(np.mean([r[name]["dice"] for r in sel])), 4)}
        per[ds]["bound"] = round(float(np.mean([r["bound"] for r in sel])), 4)
        per[ds]["interpolate"] = round(float(np.nanmean([r["interpolate"] for r in sel])), 4)
    return dict(per)


def ranking(rows: list[dict], names: list[str]) -> str:
    """Variants by the mean over datasets of the mean ratio (rings apart), with the worst."""
    solid = [r for r in rows if not r["object"].endswith(RINGS)]
    sets = sorted({r["dataset"] for r in solid})
    scored = []
    for name in names:
        means = [np.mean([r[name]["ratio"] for r in solid if r["dataset"] == ds]) for ds in sets]
        worst = min(r[name]["ratio"] for r in solid)
        scored.append((float(np.mean(means)), worst, name))
    return "\n".join(f"{m:.4f} (worst {w:.3f})  {n}" for m, w, n in sorted(scored, reverse=True))


def table(summary: dict) -> str:
    lines = []
    for ds, entry in summary.items():
        for name, s in entry.items():
            if isinstance(s, dict):
                lines.append(f"{ds:16s} {name:32s} n={s['n']:3d} Dice {s['dice']:.3f} "
                             f"(bound {entry['bound']:.3f}) ratio mean {s['mean_ratio']:.3f} "
                             f"min {s['min_ratio']:.3f}")
        lines.append(f"{ds:16s} interpolate (1/4 -> 3/4)         Dice {entry['interpolate']:.3f}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
