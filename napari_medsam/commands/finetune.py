"""`napari-medsam finetune DATA_OR_CORRECTIONS --out ADAPTER`: train a LoRA adapter."""

from __future__ import annotations

import argparse
import math
import time

from ..core import checks
from .common import add_model_options, arg, make_predictor


def register(sub) -> None:
    p = sub.add_parser(
        "finetune", help="fine-tune a LoRA adapter on corrections or a labelled folder",
        description="Train a small LoRA adapter on your corrections (an annotation project "
        "folder) or on a folder with manifest.json, with simulated boxes and clicks. A part of "
        "the patients/images is held back to validate; the best validated adapter is saved "
        "(peft files + metadata.json). Ctrl-C stops; --resume continues later.")
    p.add_argument("data", help="annotation project folder (with corrections/) or a folder "
                                "with manifest.json")
    p.add_argument("--out", required=True,
                   help="adapter folder to write, or a bare name to keep it in the registry "
                        "under --modality")
    p.add_argument("--modality", default=None,
                   help="modality the adapter is for (ct, mri, ultrasound, ...); registry key")
    p.add_argument("--targets", default="decoder", choices=["decoder", "encoder"],
                   help="decoder: fast, on cached embeddings (default); encoder: also the image "
                        "encoder (GPU advised)")
    p.add_argument("--epochs", type=arg(checks.positive), default=None,
                   help="passes over the training objects")
    p.add_argument("--steps", type=arg(checks.whole), default=None,
                   help="optimizer steps of 4 objects (default 80: ~3-4 min on 2 CPU cores)")
    p.add_argument("--minutes", type=arg(checks.positive), default=None,
                   help="stop after this many minutes")
    p.add_argument("--rank", type=arg(checks.whole, maximum=256), default=4,
                   help="LoRA rank (new adapters)")
    p.add_argument("--lr", type=arg(checks.positive), default=1e-3, help="learning rate")
    p.add_argument("--val-fraction", type=arg(checks.fraction), default=0.25,
                   help="share of patients/images held back for validation")
    p.add_argument("--datasets", default=None, help="manifest folder: only these datasets")
    p.add_argument("--fresh", action="store_true",
                   help="start from a fresh adapter instead of the active (click) adapter")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.add_argument("--threads", type=arg(checks.whole), default=None,
                   help="CPU threads for torch")
    add_model_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..core.errors import require_torch

    require_torch("Fine-tuning")
    import torch

    from ..core.adapter_registry import registry_path
    from ..core.corrections import CorrectionStore, is_store, to_train_set
    from ..core.errors import InputError
    from ..core.evaluation import select_pairs
    from ..core.training import TrainConfig, finetune, from_manifest, split_by_group
    from ..core.training.loop import bf16_is_fast

    modality = args.modality or "any"
    out = args.out if ("/" in args.out or "\\" in args.out) else registry_path(args.out, modality)
    checks.output_folder(out, "adapter folder")  # before training: the result is never lost
    datasets = [d for d in args.datasets.split(",") if d] if args.datasets else None
    store = is_store(args.data)
    if not store:
        select_pairs(args.data, datasets)  # manifest, dataset names and files, before any work
    if args.threads:
        torch.set_num_threads(args.threads)
    predictor = make_predictor(args, profile="torch")
    if store:
        data = to_train_set(CorrectionStore(args.data), predictor)
    else:
        data = from_manifest(args.data, predictor, datasets)
    if len(data) == 0:
        raise InputError(f"{args.data} holds no labelled objects to learn from.")
    train_set, val_set = split_by_group(data, args.val_fraction)
    batch = 4
    steps = args.steps or (math.ceil(args.epochs * len(train_set) / batch) if args.epochs else 80)
    config = TrainConfig(steps=steps, minutes=args.minutes, batch_size=batch, lr=args.lr,
                         val_every=max(10, steps // 10), device=str(predictor.model.device),
                         bf16=bf16_is_fast(str(predictor.model.device)))
    print(f"training on {len(train_set)} objects ({len(train_set.groups)} patients/images), "
          f"validating on {len(val_set)} ({len(val_set.groups)}); {steps} steps")
    start = time.monotonic()

    def progress(p) -> None:
        if p.val:
            figures = " ".join(f"{k} {v:.3f}" for k, v in p.val.items())
            print(f"step {p.step}/{p.steps}  loss {p.loss:.3f}  validation Dice: {figures}")

    result = finetune(predictor.model, train_set, val_set, predictor.cache, out, config,
                      targets=args.targets, rank=args.rank,
                      init_from=None if args.fresh else "active",
                      metadata={"modality": modality, "trained_on": str(args.data)},
                      progress=progress, resume=args.resume)
    print(f"saved {out} after {result.steps} steps in {time.monotonic() - start:.0f} s "
          f"({result.stopped}); validation Dice before -> after:")
    for key, before in result.val_before.items():
        print(f"  {key:<8} {before:.3f} -> {result.val_after.get(key, float('nan')):.3f}")
    return 0
