"""Reproduce the shipped automatic-segmentation heads and the numbers in docs/autoseg.md.

    python scripts/train_heads.py                   # the shipped heads (every task x 2 kinds)
    python scripts/train_heads.py --curve           # few-shot curve: 5, 10, 20 training images
    python scripts/train_heads.py --only ph2-patch  # one head

Training uses ../shared/train only (patients that are not in ../shared/data); the mode of each
head is chosen on held-out patients of the training folder; Dice is then reported on the dev
patients of ../shared/data next to LiteMedSAM's box-prompt Dice on the ground-truth box. Results
go to benchmarks/results/autoseg.json (and into each shipped head's metadata.json as "dev").
Embeddings come from the disk cache given with --cache-dir (computed once when missing).
After a shipped head changes, `python scripts/export_onnx.py` records its head.onnx in the ONNX
manifest (tests/test_shipped_onnx.py checks it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from napari_medsam.core.atomic import atomic_text  # noqa: E402
from napari_medsam.core.autoseg import HeadTrainConfig, list_pairs, load_examples  # noqa: E402
from napari_medsam.core.autoseg.evaluate import (  # noqa: E402
    BOX_MARGIN,
    evaluate_head,
    mean_dice,
    set_example,
)
from napari_medsam.core.autoseg.heads import count_parameters  # noqa: E402
from napari_medsam.core.autoseg.pipeline import fit_head  # noqa: E402
from napari_medsam.core.autoseg.store import shipped_heads_dir  # noqa: E402
from napari_medsam.core.embeddings import EmbeddingCache  # noqa: E402
from napari_medsam.core.metrics import bbox, dice  # noqa: E402
from napari_medsam.core.predictor import Predictor  # noqa: E402
from napari_medsam.core.runtime import RuntimeSpec, load_torch  # noqa: E402
from napari_medsam.core.storage import read_metadata, write_metadata  # noqa: E402

TASKS = {  # head name -> (datasets, structure values, names, training images, val patients)
    "camus": (["camus"], [1, 2, 3], ["LV", "myocardium", "LA"], 200, 8),
    "ph2": (["ph2"], [1], ["lesion"], 130, 15),
    "cardiac-mri": (["acdc", "mscmr"], [1, 2, 3], ["RV", "myocardium", "LV"], 400, 10),
    "abdomen-mri": (["chaos_t2"], [1, 2, 3, 4], ["liver", "right kidney", "left kidney",
                                                 "spleen"], 300, 2),
}
# (map steps, decoder steps) of the heads trained longer than the echo heads' short recipe
LONG = (600, 1500)
STEPS = {"cardiac-mri-patch": LONG, "abdomen-mri-patch": LONG, "abdomen-mri-shape": LONG}
MODALITY = {"camus": "echocardiography", "ph2": "dermoscopy", "cardiac-mri": "cardiac MRI",
            "abdomen-mri": "abdominal MRI"}
KINDS = ("patch", "shape")
CURVE = (5, 10, 20)


def task_pairs(folder: str, datasets: list[str]) -> list[dict]:
    """The pairs of every dataset of a task, cases named dataset/case (ids may repeat)."""
    return [{**p, "case": f"{p['dataset']}/{p['case']}"}
            for d in datasets for p in list_pairs(folder, d)]


def split_patients(pairs: list[dict], n_val: int, seed: int = 0) -> tuple[list, list]:
    """(train pairs, val pairs): `n_val` whole patients held out for choosing the mode."""
    cases = sorted({p["case"] for p in pairs})
    rng = np.random.default_rng(seed)
    val_cases = set(rng.choice(cases, n_val, replace=False).tolist())
    return ([p for p in pairs if p["case"] not in val_cases],
            [p for p in pairs if p["case"] in val_cases])


def dev_report(predictor, head, dev_examples) -> dict:
    """Dev Dice of the head's own dense path and of its chosen mode(s)."""
    modes = ("dense", head.mode) if head.mode != "dense" else ("dense",)
    t0 = time.perf_counter()
    dice = mean_dice(evaluate_head(predictor, head, dev_examples, modes))
    chosen = head.mode if isinstance(head.mode, str) else ",".join(
        head.mode[n] for n in head.names)
    return {"dice": dice, "chosen": chosen, "images": len(dev_examples),
            "seconds_per_image": round((time.perf_counter() - t0) / len(dev_examples), 3)}


def recipe(job: str, kind: str, args) -> HeadTrainConfig:
    """The training settings of `job`: its STEPS entry (else the defaults), CLI flags first."""
    steps = STEPS.get(job, (HeadTrainConfig.map_steps, HeadTrainConfig.decoder_steps))
    return HeadTrainConfig(kind=kind, threads=args.threads,
                           map_steps=args.map_steps or steps[0],
                           decoder_steps=args.decoder_steps or steps[1])


def box_prompt_dice(predictor, dev_examples, values, names) -> dict:
    """LiteMedSAM's Dice from a box on the ground truth (5-pixel margin): the upper bound."""
    scores: dict[str, list[float]] = {n: [] for n in names}
    for ex in dev_examples:
        set_example(predictor, ex)
        for value, name in zip(values, names, strict=True):
            truth = ex.truth == value
            if truth.any():
                mask = predictor.predict(box=bbox(truth, BOX_MARGIN)).masks[0]
                scores[name].append(dice(mask, truth))
    return {n: round(float(np.mean(v)), 4) for n, v in scores.items()}


def save_results(path: Path, key: str, entry: dict) -> None:
    """Merge one entry into the results file (other runs may be writing other keys)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    merged = json.loads(path.read_text()) if path.is_file() else {}
    merged[key] = entry
    atomic_text(path, json.dumps(merged, indent=1, sort_keys=True))


def markdown_tables(results: dict) -> str:
    """The docs/autoseg.md tables: dev Dice of each head (dense and chosen mode) vs box prompt."""
    lines = []
    for dataset, (_, _, names, _, _) in TASKS.items():
        box = results.get(f"{dataset}-box-prompt")
        if box is None:
            continue
        cols = " | ".join(names)
        lines += [f"\n**{dataset}** (dev patients of ../shared/data)\n",
                  f"| head | train images | path | {cols} | mean | CPU s | params |",
                  "|---|---|---|" + "---|" * len(names) + "---|---|---|"]
        lines.append("| box prompt (GT box + 5 px), upper bound | - | box | "
                     + " | ".join(f"{box[n]:.3f}" for n in names)
                     + f" | {np.mean([box[n] for n in names]):.3f} | - | - |")
        keys = sorted((k for k in results if k.startswith(dataset) and "box-prompt" not in k),
                      key=lambda k: (results[k]["kind"], results[k]["training_images"]))
        for key in keys:
            r = results[key]
            for path in dict.fromkeys(["dense", r["dev"]["chosen"]]):
                d = r["dev"]["dice"][path]
                label = path if path == "dense" else f"{path} (val-chosen)"
                lines.append(
                    f"| {r['kind']} | {r['training_images']} | {label} | "
                    + " | ".join(f"{d[n]:.3f}" for n in names)
                    + f" | {np.mean([d[n] for n in names]):.3f} | "
                    f"{r.get('training_cpu_seconds', '-')} | {r['parameters']:,} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", default=str(REPO.parent / "shared" / "train"))
    ap.add_argument("--dev", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--cache-dir", default=str(REPO.parent / "cache" / "emb"))
    ap.add_argument("--only", nargs="*", default=None, help="e.g. camus-patch ph2-shape")
    ap.add_argument("--curve", action="store_true", help="few-shot curve instead of shipping")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "autoseg.json"))
    ap.add_argument("--table", action="store_true", help="print the markdown tables and stop")
    ap.add_argument("--images", type=int, default=None,
                    help="training images per head (default: each task's shipped number)")
    ap.add_argument("--map-steps", type=int, default=None,
                    help="head-map steps (default: the head's recipe, STEPS)")
    ap.add_argument("--decoder-steps", type=int, default=None,
                    help="steps through the decoder (default: the head's recipe, STEPS)")
    ap.add_argument("--heads-dir", default=None,
                    help="write the heads here instead of into the package's shipped heads")
    args = ap.parse_args()
    if args.table:
        print(markdown_tables(json.loads(Path(args.out).read_text())))
        return 0
    torch.set_num_threads(args.threads)
    model = load_torch(RuntimeSpec())
    predictor = Predictor(model, EmbeddingCache(memory_bytes=1 << 28, disk_dir=args.cache_dir))
    out_path = Path(args.out)
    results = json.loads(out_path.read_text()) if out_path.is_file() else {}
    for dataset, (sets, values, names, n_ship, n_val) in TASKS.items():
        jobs = [f"{dataset}-{k}" for k in KINDS]
        jobs = [j for j in jobs if args.only is None or j in args.only]
        if not jobs:
            continue
        train_pairs, val_pairs = split_patients(task_pairs(args.train, sets), n_val)
        dev = load_examples(predictor, task_pairs(args.dev, sets), values)
        if f"{dataset}-box-prompt" not in results:
            results[f"{dataset}-box-prompt"] = box_prompt_dice(predictor, dev, values, names)
            save_results(out_path, f"{dataset}-box-prompt", results[f"{dataset}-box-prompt"])
        for job in jobs:
            kind = job.rsplit("-", 1)[1]
            sizes = CURVE if args.curve else (args.images or n_ship,)
            for n in sizes:
                key = f"{job}@{n}" if args.curve else job
                heads_dir = Path(args.heads_dir) if args.heads_dir else shipped_heads_dir()
                out = None if args.curve else heads_dir / job
                print(f"== {key}: training on {n} images", flush=True)
                head, meta = fit_head(predictor, train_pairs, values, names,
                                      recipe(job, kind, args),
                                      out=out, dataset=dataset, max_images=n, val=val_pairs,
                                      progress=lambda m: print("  ", m, flush=True))
                report = dev_report(predictor, head, dev)
                results[key] = {"kind": kind, "dataset": dataset,
                                "training_images": meta["training_images"],
                                "training_seconds": meta["training_seconds"],
                                "training_cpu_seconds": meta["training_cpu_seconds"],
                                "parameters": count_parameters(head.module),
                                "validation": meta["validation"], "dev": report}
                if out is not None:
                    meta = read_metadata(out)
                    meta["dev"] = report
                    meta["modality"] = MODALITY[dataset]
                    meta["size_bytes"] = (out / "head.safetensors").stat().st_size
                    write_metadata(out, meta)
                    results[key]["size_bytes"] = meta["size_bytes"]
                print(json.dumps(results[key]["dev"]), flush=True)
                save_results(out_path, key, results[key])
    return 0


if __name__ == "__main__":
    sys.exit(main())
