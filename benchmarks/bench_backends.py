"""Backends and profiles: speed vs torch fp32 (same run), mask agreement per dev dataset, peak RSS.

1. Speed: torch fp32 and every profile on the same image, interleaved round by round (so load
   from other processes hits all alike); median encoder ms per 256x256 slice, click ms (box ->
   mask on the image grid), refine ms (box + click + previous logits), point ms (one click, no
   box: the click adapter's decoder) and point2 ms (a second click with the first one's logits),
   and the ratio to torch.
2. Agreement: for dev targets of every dataset of ../shared/data, the box mask (tight box +5 px)
   and a box + corrective click mask of each profile against torch fp32: Dice agreement, and
   Dice against ground truth of both. ONNX embeddings are computed fresh; torch's may come from
   an on-disk cache (--emb-cache, torch fp32 embeddings stored as fp16).
3. Peak RSS of `napari-medsam segment` with each profile (fresh process; says whether torch was
   imported).

    OMP_NUM_THREADS=2 python benchmarks/bench_backends.py --emb-cache /work/cache/emb
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("NAPARI_MEDSAM_DATA", REPO.parent / "shared" / "data"))
TARGETS = {"balanced": 0.98, "fast": 0.95}

from napari_medsam.core import regions  # noqa: E402
from napari_medsam.core.backends.onnx_backend import default_threads  # noqa: E402
from napari_medsam.core.backends.preprocess import mask_from_logits  # noqa: E402
from napari_medsam.core.embeddings import EmbeddingCache  # noqa: E402
from napari_medsam.core.evaluation import iter_targets  # noqa: E402
from napari_medsam.core.metrics import bbox, dice  # noqa: E402
from napari_medsam.core.predictor import Predictor, to_unit_rgb  # noqa: E402
from napari_medsam.core.runtime import RuntimeSpec, build_backend, load_torch  # noqa: E402


def speed(backends: dict, image01: np.ndarray, repeats: int, clock=time.perf_counter
          ) -> dict[str, dict[str, float]]:
    """Median encode / click / refine ms per backend, interleaved round by round.

    `clock=time.process_time` with one thread measures CPU time, which other processes on a
    busy machine inflate far less than wall time (and torch's spinning threads not at all).
    """
    times: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    box = np.array([[70.0, 60.0, 170.0, 180.0]])
    point, label = np.array([[[120.0, 110.0]]]), np.array([[1]])
    two, labels2 = np.array([[[120.0, 110.0], [125.0, 150.0]]]), np.array([[1, 1]])
    for b in backends.values():  # warm-up: sessions, allocators
        f, _ = b.encode(image01)
        b.decode(b.load_features(f), None, None, box, None)
    for _ in range(repeats):
        for name, b in backends.items():
            t0 = clock()
            features, resized = b.encode(image01)
            t1 = clock()
            handle = b.load_features(features)
            t2 = clock()
            logits, _ = b.decode(handle, None, None, box, None)
            mask_from_logits(logits, b.image_size, resized, image01.shape[:2])
            t3 = clock()
            logits, _ = b.decode(handle, point, label, box, logits)
            mask_from_logits(logits, b.image_size, resized, image01.shape[:2])
            t4 = clock()
            logits, _ = b.decode(handle, point, label, None, None)  # a click, no box
            mask_from_logits(logits, b.image_size, resized, image01.shape[:2])
            t5 = clock()
            logits, _ = b.decode(handle, two, labels2, None, logits)  # second click + its mask
            mask_from_logits(logits, b.image_size, resized, image01.shape[:2])
            t6 = clock()
            for key, value in (("encode", t1 - t0), ("click", t3 - t2), ("refine", t4 - t3),
                               ("point", t5 - t4), ("point2", t6 - t5)):
                times[name][key].append(1000 * value)
    return {n: {k: float(np.median(v)) for k, v in d.items()} for n, d in times.items()}


def pick_targets(per_dataset: int) -> dict[str, list]:
    """Up to `per_dataset` targets per dataset, evenly spread over its targets.

    In volumes each object is taken at 1/4, 1/2 and 3/4 of its slice extent (its first and
    last slices hold slivers a few pixels wide, where any two masks disagree).
    """
    found: dict[str, list] = defaultdict(list)
    extent: dict[tuple, list] = defaultdict(list)
    for t in iter_targets(DATA):
        if t.slice is None:
            found[t.dataset].append(t)
        else:
            extent[(t.dataset, t.case, t.label)].append(t)
    for (ds, _, _), ts in extent.items():
        ts.sort(key=lambda t: t.slice)
        found[ds] += [ts[int(q * (len(ts) - 1) + 0.5)] for q in (0.25, 0.5, 0.75)]
    out = {}
    for ds, ts in found.items():
        idx = np.unique(np.linspace(0, len(ts) - 1, min(per_dataset, len(ts))).round().astype(int))
        out[ds] = [ts[i] for i in idx]
    return out


def corrective_click(truth: np.ndarray, mask: np.ndarray):
    """One click in the middle of the larger error region (positive if missed, else negative)."""
    missed, extra = truth & ~mask, mask & ~truth
    err, positive = (missed, 1) if missed.sum() >= extra.sum() else (extra, 0)
    if not err.any():
        return None
    dist = regions.depth(err)
    y, x = np.unravel_index(int(dist.argmax()), dist.shape)
    return np.array([[float(x), float(y)]]), np.array([positive])


def agreement(reference: Predictor, others: dict[str, Predictor], targets: dict[str, list]):
    """Per dataset and profile: [box agree, click agree, GT torch, GT profile] per target."""
    rows: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for ds, ts in targets.items():
        for t in ts:
            box = bbox(t.truth, 5)
            reference.set_image(t.image, t.preset, t.bounds)
            ref = reference.predict(box=box)
            click = corrective_click(t.truth, ref.masks[0])
            ref2 = reference.predict(points=click[0], labels=click[1], box=box,
                                     mask_input=ref.low_res_logits) if click else ref
            for name, p in others.items():
                p.set_image(t.image, t.preset, t.bounds)
                got = p.predict(box=box)
                got2 = p.predict(points=click[0], labels=click[1], box=box,
                                 mask_input=got.low_res_logits) if click else got
                rows[ds][name].append((dice(ref.masks[0], got.masks[0]),
                                       dice(ref2.masks[0], got2.masks[0]),
                                       dice(ref.masks[0], t.truth), dice(got.masks[0], t.truth)))
        print(f"  {ds}: {len(ts)} targets done", flush=True)
    return rows


def agreement_table(rows, targets: dict[str, float], names=("profile", "GT torch", "GT prof")
                    ) -> dict:
    """Print the per-dataset agreement rows of `agreement` (means, worst box agreement, GT Dice
    of reference and candidate, their drop, and whether `targets` are met); return them as lists
    for the JSON report."""
    print(f"{'dataset':18s} {names[0]:10s} {'n':>3s} {'box agree':>9s} {'min':>6s} "
          f"{'click agree':>11s} {names[1]:>8s} {names[2]:>8s} {'drop':>6s}")
    for ds, d in rows.items():
        for p, v in d.items():
            a = np.asarray(v)
            drop = a[:, 2].mean() - a[:, 3].mean()
            ok = "" if p not in targets else (" ok" if a[:, 0].mean() >= targets[p] else
                                              f" MISS<{targets[p]}")
            print(f"{ds:18s} {p:10s} {len(a):3d} {a[:, 0].mean():9.4f} {a[:, 0].min():6.3f} "
                  f"{a[:, 1].mean():11.4f} {a[:, 2].mean():8.4f} {a[:, 3].mean():8.4f} "
                  f"{drop:6.3f}{ok}")
    return {ds: {p: np.asarray(v).tolist() for p, v in d.items()} for ds, d in rows.items()}


RUNNER = """
import sys, time
from napari_medsam.cli import main
t = time.perf_counter()
rc = main(sys.argv[1:])
hwm = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])  # peak RSS, kB
print("RESULT", rc, round(time.perf_counter() - t, 2), hwm, "torch" in sys.modules)
"""


def peak_rss(profile: str, image: Path, box: list[float]) -> tuple[float, float, bool]:
    """(peak RSS MiB, seconds, torch imported) of one `napari-medsam segment` run."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-c", RUNNER, "segment", str(image), "--box", *map(str, box),
               "--profile", profile, "--no-disk-cache",
               "-o", str(Path(tmp) / "mask.png")]
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    line = [s for s in out.stdout.splitlines() if s.startswith("RESULT")]
    if not line:
        raise RuntimeError(f"segment run failed: {out.stderr[-2000:]}")
    _, rc, secs, rss_kb, torch_loaded = line[0].split()
    return int(rss_kb) / 1024, float(secs), torch_loaded == "True"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profiles", default="accurate,balanced,fast")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--per-dataset", type=int, default=12, help="agreement targets per dataset")
    ap.add_argument("--threads", type=int, default=None, help="threads for torch and ORT")
    ap.add_argument("--emb-cache", default=None, help="torch fp32 embedding cache folder")
    ap.add_argument("--cpu-time", action="store_true",
                    help="time CPU seconds instead of wall time (use with --threads 1)")
    ap.add_argument("--skip-agreement", action="store_true")
    ap.add_argument("--skip-rss", action="store_true")
    ap.add_argument("--json", default=None, help="write all numbers to this file")
    args = ap.parse_args()

    import torch


    threads = args.threads or default_threads()
    torch.set_num_threads(threads)
    profiles = [p for p in args.profiles.split(",") if p]
    model = load_torch(RuntimeSpec(device="cpu"))  # the default: clicks use the click adapter
    backends = {"torch fp32": build_backend(RuntimeSpec(profile="torch"), model=model)}
    backends.update({p: build_backend(RuntimeSpec(profile=p, threads=threads), model=model)
                     for p in profiles})
    for name, b in backends.items():
        print(f"{name:12s} {b.describe()}")
    report: dict = {"threads": threads, "load_before": os.getloadavg()}

    camus = sorted((DATA / "echo" / "camus" / "images").glob("*.png"))
    from napari_medsam.core.io import read_image

    image = camus[0] if camus else None
    pixels = read_image(image).data if image else np.random.default_rng(0).random((256, 256))
    from napari_medsam.core.intensity import get_preset

    unit = to_unit_rgb(pixels, get_preset("auto"))
    res = speed(backends, unit, args.repeats, time.process_time if args.cpu_time else
                time.perf_counter)
    report["speed"], report["load_after"] = res, os.getloadavg()
    base = res["torch fp32"]
    what = "CPU time" if args.cpu_time else "wall time"
    print(f"\nspeed ({what}), {threads} threads, median of {args.repeats} (load avg "
          f"{report['load_before'][0]:.1f} -> {report['load_after'][0]:.1f})")
    print(f"{'backend':12s} {'encode ms':>10s} {'x torch':>8s} {'click ms':>9s} {'x torch':>8s} "
          f"{'refine ms':>10s} {'x torch':>8s} {'point ms':>9s} {'x torch':>8s} "
          f"{'point2 ms':>10s} {'x torch':>8s}")
    for name, r in res.items():
        print(f"{name:12s} {r['encode']:10.0f} {base['encode'] / r['encode']:8.2f} "
              f"{r['click']:9.1f} {base['click'] / r['click']:8.2f} {r['refine']:10.1f} "
              f"{base['refine'] / r['refine']:8.2f} {r['point']:9.1f} "
              f"{base['point'] / r['point']:8.2f} {r['point2']:10.1f} "
              f"{base['point2'] / r['point2']:8.2f}")

    if not args.skip_agreement and (DATA / "manifest.json").is_file():
        cache = EmbeddingCache(disk_dir=args.emb_cache) if args.emb_cache else EmbeddingCache()
        reference = Predictor(backend=backends["torch fp32"], cache=cache)
        others = {p: Predictor(backend=backends[p], cache=EmbeddingCache()) for p in profiles}
        print("\nagreement with torch fp32 (box, tight +5 px; then one corrective click)")
        rows = agreement(reference, others, pick_targets(args.per_dataset))
        report["agreement"] = agreement_table(rows, TARGETS)

    if not args.skip_rss and image is not None:
        print("\npeak RSS of `napari-medsam segment` (fresh process, models already exported)")
        report["rss"] = {}
        for p in ["torch", *profiles]:
            mib, secs, torch_loaded = peak_rss(p, image, [60, 50, 170, 180])
            report["rss"][p] = {"mib": mib, "seconds": secs, "torch_imported": torch_loaded}
            print(f"{p:12s} {mib:7.0f} MiB {secs:6.1f} s  torch imported: {torch_loaded}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
