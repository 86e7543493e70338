"""Train the shipped point-prompt (click) adapter for LiteMedSAM, on every modality, reproducibly.

LiteMedSAM was trained with boxes only: a lone click gives an empty mask. This script trains a
decoder adapter with the project's own training engine on simulated click sequences (first click
at the most interior point, each next click at the most interior point of the largest error
region, previous logits fed back) and box + click sequences (the box mask comes from the base
model, which keeps box-only prompts: boxes cannot get worse).

Data: every image and label of the training folder (../shared/train: CAMUS echo, PH2 dermoscopy,
ACDC / MS-CMR / LA / CHAOS MRI, COVID-19 / LIDC CT), datasets balanced by sampling weight
(~ objects ** --balance), plus the zoom windows the predictor shows around small objects
(`core.zoom`, `training.zoom_crops`). Validation and early stopping on a spread of the dev folder
(../shared/data, other patients). Embeddings come from the on-disk cache (computed once).

Structure: `--structure lora` (one peft LoRA on the decoder's attention and MLP layers) or
`--structure moe` (token-level mixture of LoRA experts after SegMoTE, `training.moe`; compare at
the same trainable-parameter count: `--rank 10` vs `--experts 4 --expert-rank 2`).

    python scripts/train_click_adapter.py --cache /work/cache/emb --threads 2 \\
        --out napari_medsam/resources/adapters/click

`--device cuda` is much faster; on 2 CPU cores about 2.5 s per step of 4 objects.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from napari_medsam.core.embeddings import EmbeddingCache, default_cache_dir  # noqa: E402
from napari_medsam.core.evaluation import load_manifest  # noqa: E402
from napari_medsam.core.predictor import Predictor  # noqa: E402
from napari_medsam.core.runtime import RuntimeSpec, load_torch  # noqa: E402
from napari_medsam.core.training import (  # noqa: E402
    TrainConfig,
    finetune,
    from_manifest,
    moe,
    resume_dir,
)
from napari_medsam.core.training.data import TrainSet, describe  # noqa: E402
from napari_medsam.core.training.loop import train  # noqa: E402
from napari_medsam.core.zoom import ZoomPolicy  # noqa: E402

DEV_DATASETS = "camus,ph2,kvasir_seg,acdc,mscmr,la_mri,chaos_t2,covid_ct,lidc,ct2d_sammed2d"


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", default=str(REPO.parent / "shared" / "train"))
    p.add_argument("--val", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--val-datasets", default=DEV_DATASETS)
    p.add_argument("--val-objects", type=int, default=160,
                   help="validation objects used for early stopping (spread over datasets)")
    p.add_argument("--cache", default=None, help="embedding cache folder")
    p.add_argument("--max-cases", default=None, metavar="DATASET:N,...",
                   help="train on the first N patients/cases of these datasets (manifest "
                        "order), e.g. camus:200; other datasets are used whole")
    p.add_argument("--out", default=str(REPO / "napari_medsam/resources/adapters/click"))
    p.add_argument("--structure", default="lora", choices=["lora", "moe"])
    p.add_argument("--rank", type=int, default=8, help="LoRA rank (--structure lora)")
    p.add_argument("--experts", type=int, default=4, help="experts per layer (moe)")
    p.add_argument("--expert-rank", type=int, default=2, help="rank of each expert (moe)")
    p.add_argument("--top-k", type=int, default=1, help="experts per token (moe)")
    p.add_argument("--aux-weight", type=float, default=0.01, help="load-balancing loss (moe)")
    p.add_argument("--init-from", default=None,
                   help="start from this LoRA adapter folder (same rank), e.g. the previous "
                        "click adapter")
    p.add_argument("--balance", type=float, default=0.3,
                   help="dataset sampling weight ~ objects ** balance (0: every dataset alike)")
    p.add_argument("--no-zoom", action="store_true", help="no small-object windows")
    p.add_argument("--zoom-per-image", type=int, default=1)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--minutes", type=float, default=None)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--max-clicks", type=int, default=5)
    p.add_argument("--box-keep", type=float, default=1.0,
                   help="weight of the box-only pass through the adapter's own weights, "
                        "trained to the ground truth (a user's fine-tune starts from them); "
                        "0: off")
    p.add_argument("--val-every", type=int, default=100)
    p.add_argument("--patience", type=int, default=4)
    p.add_argument("--keep", default="best", choices=["best", "last"],
                   help="weights to save: the best-validated or the end of the schedule")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fp32", action="store_true", help="train in float32 (default bf16 autocast)")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--no-encode", action="store_true",
                   help="skip images whose embedding is not cached (quick experiments)")
    return p.parse_args(argv)


def first_cases(folder: str, limits: str | None) -> list[str] | None:
    """The cases to train on: the first N of each dataset named in `limits` ("camus:140"),
    every case of the others (None: all cases)."""
    if not limits:
        return None
    caps = {name: int(n) for name, n in (item.split(":") for item in limits.split(","))}
    chosen: dict[str, list[str]] = {}
    for pair in load_manifest(folder):
        cases = chosen.setdefault(pair["dataset"], [])
        if pair["case"] not in cases and len(cases) < caps.get(pair["dataset"], 10**9):
            cases.append(pair["case"])
    return [c for cases in chosen.values() for c in cases]


def spread(data: TrainSet, n: int, seed: int) -> TrainSet:
    """About n objects, the same share per dataset, whole images, fixed by the seed."""
    rng = np.random.default_rng(seed)
    names = sorted({im.dataset for im in data.images})
    out = TrainSet()
    for name in names:
        idx = [i for i, im in enumerate(data.images) if im.dataset == name]
        take = rng.permutation(idx)
        count = 0
        for i in take:
            if count >= n / len(names):
                break
            out.add(data.images[i])
            count += len(np.unique(data.images[i].labels)) - 1
    return out


def main(argv=None) -> int:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    t0, cpu0 = time.monotonic(), time.process_time()
    model = load_torch(RuntimeSpec(device=args.device, click_adapter=False))
    cache = EmbeddingCache(memory_bytes=6 << 30,
                           disk_dir=args.cache or default_cache_dir() / "embeddings")
    predictor = Predictor(model, cache)
    encode = not args.no_encode
    zoom = None if args.no_zoom else ZoomPolicy()

    def report(done, total):
        if done % 500 == 0 or done == total:
            print(f"  read {done}/{total} pairs ({time.monotonic() - t0:.0f} s)", flush=True)

    print("building the training set", flush=True)
    train_set = from_manifest(args.train, predictor, encode_missing=encode, progress=report,
                              cases=first_cases(args.train, args.max_cases), zoom=zoom,
                              zoom_per_image=args.zoom_per_image, seed=args.seed)
    print("building the validation set", flush=True)
    val_all = from_manifest(args.val, predictor, datasets=args.val_datasets.split(","),
                            encode_missing=encode, max_slices=4, zoom=zoom, seed=args.seed)
    val_set = spread(val_all, args.val_objects, args.seed)
    print(f"train: {len(train_set)} objects / {len(train_set.images)} images / "
          f"{len(train_set.groups)} patients; validation: {len(val_set)} objects "
          f"({time.monotonic() - t0:.0f} s)", flush=True)
    print(json.dumps(describe(train_set)), flush=True)
    config = TrainConfig(steps=args.steps, minutes=args.minutes, batch_size=args.batch,
                         lr=args.lr, mix=(0.0, 0.7, 0.3), max_clicks=args.max_clicks,
                         balance=args.balance, val_every=args.val_every,
                         patience=args.patience, box_prompts="base", box_keep=args.box_keep,
                         bf16=not args.fp32, keep=args.keep,
                         seed=args.seed, device=args.device)

    def progress(p):
        if p.val is not None:
            figures = " ".join(f"{k}={v:.3f}" for k, v in p.val.items())
            print(f"step {p.step}/{p.steps} loss {p.loss:.3f} {figures} "
                  f"({p.elapsed / 60:.1f} min)", flush=True)
        elif p.step % 50 == 0:
            print(f"step {p.step}/{p.steps} loss {p.loss:.3f} ({p.elapsed / 60:.1f} min)",
                  flush=True)

    kind = "LoRA" if args.structure == "lora" else "mixture of LoRA experts"
    meta = {
        "modality": "any",
        "purpose": "point prompts (clicks, box + clicks) for the box-only LiteMedSAM",
        "description": f"Decoder {kind} trained on simulated click sequences of every "
                       "modality; box-only prompts use the base model.",
        "training_data": "../shared/train: CAMUS echo, PH2 dermoscopy, ACDC / MS-CMR / LA / "
                         "CHAOS MRI, COVID-19 / LIDC CT (train patients), every label, plus "
                         "zoom windows of small objects; validated on other patients (dev set)",
        "command": "python scripts/train_click_adapter.py " + " ".join(sys.argv[1:]),
        "threads": args.threads,
        "structure": args.structure,
    }
    if args.structure == "moe":
        result = train_moe(model, train_set, val_set, cache, config, args, meta, progress)
    else:
        if args.init_from:
            from napari_medsam.core.adapters import adapters_of

            adapters_of(model).load(args.init_from, name="init")
            meta["initialised_from_folder"] = args.init_from
        result = finetune(model, train_set, val_set, cache, args.out, config, rank=args.rank,
                          init_from="init" if args.init_from else None, metadata=meta,
                          progress=progress, resume=args.resume, gate=False)
    print(json.dumps({"before": result.val_before, "after": result.val_after,
                      "steps": result.steps, "best_step": result.best_step,
                      "stopped": result.stopped, "minutes": round(result.seconds / 60, 1)},
                     indent=1))
    print(f"saved {args.out} ({time.monotonic() - t0:.0f} s in all, "
          f"{time.process_time() - cpu0:.0f} s of CPU time)")
    return 0


def train_moe(model, train_set, val_set, cache, config, args, meta, progress):
    """Train token-routed experts (training.moe) and save them beside a LoRA's layout."""
    params = moe.inject(model, args.experts, args.expert_rank, top_k=args.top_k)
    print(f"mixture of experts: {moe.count(params)} trainable parameters", flush=True)
    checkpoint = resume_dir(args.out)  # as a LoRA run keeps one: --resume continues from it
    if not args.resume and checkpoint.exists():
        shutil.rmtree(checkpoint)
    result = train(model, params, train_set, val_set, cache, config, progress,
                   checkpoint_dir=checkpoint, base_context=lambda: moe.disabled(model),
                   aux_loss=lambda: moe.aux_loss(model), aux_weight=args.aux_weight)
    meta.update(parameters=moe.count(params), val_dice_before=result.val_before,
                val_dice_after=result.val_after, box_prompts="base",
                training_set={"objects": len(train_set), "images": len(train_set.images),
                              "groups": len(train_set.groups),
                              "per_dataset": describe(train_set)},
                recipe={**config.to_dict(), "steps_run": result.steps,
                        "best_step": result.best_step, "seconds": round(result.seconds, 1)})
    moe.save(model, args.out, meta)
    shutil.rmtree(checkpoint, ignore_errors=True)
    return result


if __name__ == "__main__":
    sys.exit(main())
