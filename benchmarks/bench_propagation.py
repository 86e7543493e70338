"""3D propagation benchmark: Dice from a single box vs a ground-truth box on every slice, and time.

For every object of the dev volumes (DeepLesion lesions, BraTS whole tumour = label > 0, a few
large TotalSegmentator organs as a silver reference):
  upper bound  the tight ground-truth box (+5 px) on every slice that holds the object;
  propagated   one ground-truth box (+5 px) on the middle slice of the object's extent (the slice
               holding the object nearest to (first + last) / 2), then Session.propagate;
  interpolate  ground truth on the slices at 1/4 and 3/4 of the extent, Session.interpolate
               (model-refined and shape-only), Dice on the slices in between.
Time prop/slice is the propagation time per slice with embeddings cached (decoder + prompts);
encode/slice is the encoder on uncached slices, so a cold propagation costs about their sum.
2D+t: CAMUS LV cavity, end-diastole -> end-systole, read as a two-frame sequence.

    OMP_NUM_THREADS=1 python benchmarks/bench_propagation.py --cache-dir /work/cache/emb
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from napari_medsam.core.embeddings import EmbeddingCache
from napari_medsam.core.intensity import suggest_preset
from napari_medsam.core.metrics import bbox, dice
from napari_medsam.core.predictor import Predictor
from napari_medsam.core.propagation import PRESETS
from napari_medsam.core.runtime import RuntimeSpec, build_predictor
from napari_medsam.core.session import Session
from napari_medsam.core.volume import read_volume

REPO = Path(__file__).resolve().parents[1]
OBJECTS = {  # dataset -> (label name, label test) pairs
    "deeplesion": [("lesion", lambda lab: lab == 1)],
    "brats2015": [("whole tumour", lambda lab: lab > 0)],
    "totalseg_example": [(name, lambda lab, v=v: lab == v) for name, v in
                         [("spleen", 1), ("kidney_right", 2), ("kidney_left", 3), ("liver", 5),
                          ("stomach", 6)]],
}
VARIANTS = {  # the default ("box", 3 px margin) and alternatives it was chosen over
    "box": {},
    "box5": {"margin": 5},
    "box+point": {"use_point": True},
    "box+mask": {"use_mask": True},
}


def middle_slice(truth: np.ndarray) -> int:
    zs = np.nonzero(truth.any(axis=(1, 2)))[0]
    return int(zs[np.argmin(np.abs(zs - (zs.min() + zs.max()) / 2))])


def upper_bound(session: Session, truth: np.ndarray) -> tuple[float, float]:
    """3D Dice of a ground-truth box on every slice; seconds per slice (cached embeddings)."""
    pred = np.zeros_like(truth)
    zs = np.nonzero(truth.any(axis=(1, 2)))[0]
    t0 = time.perf_counter()
    for z in zs:
        session.embed(int(z))
        pred[z] = session.predictor.predict(box=bbox(truth[z], 5)).masks[0]
    return dice(pred, truth), (time.perf_counter() - t0) / len(zs)


def propagated(session: Session, truth: np.ndarray, settings) -> dict:
    session.labels[:] = 0
    z = middle_slice(truth)
    session.set_slice(z)
    session.reset_prompts()
    session.set_box(bbox(truth[z], 5))
    result = session.propagate(settings=settings)
    pred = session.labels > 0
    zs = np.nonzero(truth.any(axis=(1, 2)))[0]
    return {"dice": dice(pred, truth), "start": z, "extent": [int(zs.min()), int(zs.max())],
            "reached": list(result.extent), "stopped": result.stopped,
            "s_per_slice": result.seconds / max(len(result.slices), 1)}


def interpolated(session: Session, truth: np.ndarray, refine: bool) -> float:
    zs = np.nonzero(truth.any(axis=(1, 2)))[0]
    z0 = int(zs[len(zs) // 4])
    z1 = int(zs[(3 * len(zs)) // 4])
    if z1 - z0 < 2:
        return float("nan")
    session.labels[:] = 0
    session.labels[[z0, z1]] = truth[[z0, z1]]
    session.interpolate(label=1, z0=z0, z1=z1, refine=refine)
    between = slice(z0 + 1, z1)
    return dice(session.labels[between] > 0, truth[between])


def encode_time(predictor: Predictor, session: Session, n: int = 2) -> float:
    """Seconds per slice of the encoder alone (no cache)."""
    t0 = time.perf_counter()
    for z in range(n):
        predictor.compute_embedding(session.slice_image(z), session.preset, session.bounds)
    return (time.perf_counter() - t0) / n


def echo_time_propagation(predictor: Predictor, data_dir: Path, patients: int) -> dict:
    from PIL import Image

    prop, upper = [], []
    names = sorted(p.name for p in (data_dir / "echo/camus/images").glob("*_ED.png"))
    names = names[: 2 * patients]
    for name in names:
        frames, truth = [], []
        for phase in ("ED", "ES"):
            file = name.replace("_ED", f"_{phase}")
            frames.append(np.asarray(Image.open(data_dir / "echo/camus/images" / file)))
            truth.append(np.asarray(Image.open(data_dir / "echo/camus/masks" / file)) == 1)
        session = Session(predictor, "as-is")
        session.set_image(np.stack(frames), is_volume=True)
        session.set_slice(0)
        session.set_box(bbox(truth[0], 5))
        session.propagate(settings="time")
        prop.append(dice(session.labels[1] > 0, truth[1]))
        session.embed(1)
        upper.append(dice(predictor.predict(box=bbox(truth[1], 5)).masks[0], truth[1]))
    return {"n": len(prop), "propagated": float(np.mean(prop)), "upper": float(np.mean(upper))}


def rss_mib() -> float:
    """Current resident memory of this process (Linux), in MiB."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


def memory_check(model, data_dir: Path, cache_dir: str | None, budget_mib: int) -> dict:
    """RAM of a volume session walking its slices with an LRU budget (fp16 disk behind it).

    Only slices already in the disk cache are walked (no encoding), nearest the middle first.
    """
    pair = "mri/brats2015/images/brats_2013_pat0006_1_flair.nii.gz"
    predictor = Predictor(model, EmbeddingCache(budget_mib << 20, disk_dir=cache_dir))
    before = rss_mib()
    vol = read_volume(data_dir / pair)
    session = Session(predictor, "mri")
    session.set_image(vol.data, is_volume=True)
    loaded = rss_mib()
    order = [z for z in session.slice_order(vol.n_slices // 2) if session.is_embedded(z)]
    t0 = time.perf_counter()
    for z in order:
        session.embed(z)
    seconds = time.perf_counter() - t0
    return {"slices": len(order), "budget_mib": budget_mib, "volume_mib": loaded - before,
            "cache_mib": predictor.cache._used / 2**20, "rss_growth_mib": rss_mib() - before,
            "encoded": predictor.encoder_calls, "s_per_slice": seconds / max(len(order), 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--cache-dir", default=None, help="disk embedding cache (reused)")
    parser.add_argument("--datasets", default="deeplesion,totalseg_example,brats2015")
    parser.add_argument("--variants", default="box", help=f"of {','.join(VARIANTS)}")
    parser.add_argument("--echo-patients", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--memory-mib", type=int, default=0,
                        help="also walk a BraTS volume with this RAM budget (0: skip)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data_dir = Path(args.data)
    predictor = build_predictor(RuntimeSpec(), EmbeddingCache(disk_dir=args.cache_dir))
    pairs = json.loads((data_dir / "manifest.json").read_text())["pairs"]
    rows = []
    print(f"{'object':<36}{'upper':>7}" + "".join(f"{v:>11}" for v in args.variants.split(","))
          + f"{'interp':>8}{'shape':>7}{'prop s/sl':>10}{'enc s/sl':>9}  start/extent/reached")
    for pair in pairs:
        if pair["dataset"] not in args.datasets.split(",") or pair["dataset"] not in OBJECTS:
            continue
        vol = read_volume(data_dir / pair["image"])
        lab = read_volume(data_dir / pair["mask"]).data
        session = Session(predictor, suggest_preset(vol.data, pair["modality"]))
        session.set_image(vol.data, is_volume=True)
        enc = encode_time(predictor, session)
        for name, test in OBJECTS[pair["dataset"]]:
            truth = test(lab)
            row = {"dataset": pair["dataset"], "case": pair["case"], "object": name,
                   "encode_s": enc}
            row["upper"], row["upper_s"] = upper_bound(session, truth)
            for variant in args.variants.split(","):
                row[variant] = propagated(session, truth, replace(PRESETS["volume"],
                                                                  **VARIANTS[variant]))
            row["interp"] = interpolated(session, truth, refine=True)
            row["shape"] = interpolated(session, truth, refine=False)
            rows.append(row)
            first = row[args.variants.split(",")[0]]
            print(f"{pair['case'][:22] + ' ' + name:<36}{row['upper']:>7.3f}"
                  + "".join(f"{row[v]['dice']:>11.3f}" for v in args.variants.split(","))
                  + f"{row['interp']:>8.3f}{row['shape']:>7.3f}{first['s_per_slice']:>10.3f}"
                  f"{enc:>9.2f}  {first['start']}/{first['extent']}/{first['reached']}",
                  flush=True)
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        sel = [r for r in rows if r["dataset"] == ds]
        v0 = args.variants.split(",")[0]
        up, pr = np.mean([r["upper"] for r in sel]), np.mean([r[v0]["dice"] for r in sel])
        print(f"mean {ds:<31}{up:>7.3f}{pr:>11.3f}  propagated/upper = {pr / up:.2f}")
    echo = echo_time_propagation(predictor, data_dir, args.echo_patients)
    print(f"2D+t CAMUS LV ED->ES ({echo['n']} sequences): propagated {echo['propagated']:.3f}, "
          f"GT box on ES {echo['upper']:.3f}")
    if args.memory_mib:
        mem = memory_check(predictor.model, data_dir, args.cache_dir, args.memory_mib)
        print(f"memory: {mem['slices']} slices walked with a {mem['budget_mib']} MiB LRU: "
              f"volume {mem['volume_mib']:.0f} MiB, embeddings in RAM {mem['cache_mib']:.0f} MiB, "
              f"RSS growth {mem['rss_growth_mib']:.0f} MiB, {mem['encoded']} encoded, "
              f"{mem['s_per_slice'] * 1000:.0f} ms per slice from disk")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MiB; encoder calls {predictor.encoder_calls}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "echo": echo}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
