"""Fine-tune on 20 corrected images of one modality; Dice before/after there and elsewhere.

The 20 "corrections" are CAMUS echo images of 5 training patients (their ground-truth masks
stand in for the annotator's corrected masks), written through the real corrections store and
trained with the same call as `napari-medsam finetune`. Dice is then measured on the dev set
(other patients) for echo (the modality trained on) and every other 2D dataset, with box and
1/3-click prompts, before (base + click adapter) and after (the new adapter).

    python benchmarks/bench_finetune.py --threads 2 [--cache /work/cache/emb]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from napari_medsam.core.adapters import adapters_of  # noqa: E402
from napari_medsam.core.click_eval import click_dices  # noqa: E402
from napari_medsam.core.corrections import CorrectionStore, to_train_set  # noqa: E402
from napari_medsam.core.embeddings import EmbeddingCache  # noqa: E402
from napari_medsam.core.evaluation import BOX_MARGIN, iter_targets, load_manifest  # noqa: E402
from napari_medsam.core.io import read_image  # noqa: E402
from napari_medsam.core.metrics import bbox, dice  # noqa: E402
from napari_medsam.core.predictor import Predictor  # noqa: E402
from napari_medsam.core.runtime import RuntimeSpec, load_torch  # noqa: E402
from napari_medsam.core.training import TrainConfig, finetune, split_by_group  # noqa: E402
from napari_medsam.core.training.loop import bf16_is_fast  # noqa: E402


def make_corrections(train_dir: Path, folder: Path, predictor,
                     n_patients: int) -> CorrectionStore:
    store = CorrectionStore(folder)
    pairs = [p for p in load_manifest(train_dir) if p["dataset"] == "camus"]
    patients = sorted({p["case"] for p in pairs})[:n_patients]
    for pair in (p for p in pairs if p["case"] in patients):
        image = read_image(train_dir / pair["image"]).data
        labels = np.asarray(read_image(train_dir / pair["mask"]).data)
        key = predictor.set_image(image)
        for label in np.unique(labels)[1:]:
            store.add(image, labels == label, key=key, label=int(label),
                      box=bbox(labels == label, BOX_MARGIN), source=pair["case"],
                      modality="ultrasound", model=predictor.model.cache_id)
    return store


def measure(predictor, targets) -> dict[str, dict[str, float]]:
    """Mean Dice per dataset/label for box, 1 click and 3 clicks."""
    rows: dict[str, dict[str, list[float]]] = {}
    for t in targets:
        predictor.set_image(t.image, t.preset, t.bounds)
        box = dice(predictor.predict(box=bbox(t.truth, BOX_MARGIN)).masks[0], t.truth)
        clicks = click_dices(predictor, t.truth, max_clicks=3, stop_at=None)
        row = rows.setdefault(f"{t.dataset}/{t.label}", {"box": [], "click1": [], "click3": []})
        row["box"].append(box)
        row["click1"].append(clicks[0])
        row["click3"].append(clicks[2])
    return {k: {m: round(float(np.mean(v)), 4) for m, v in r.items()} for k, r in rows.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", default=str(REPO.parent / "shared" / "train"))
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--cache", default=None)
    p.add_argument("--patients", type=int, default=5, help="5 patients = 20 images")
    p.add_argument("--steps", type=int, default=80)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu or cuda (training and decoding)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = load_torch(RuntimeSpec(device=args.device))
    predictor = Predictor(model, EmbeddingCache(disk_dir=args.cache))
    others = ["ph2", "kvasir_seg", "ct2d_sammed2d"]
    targets = list(iter_targets(args.data, ["camus", *others]))
    targets += list(iter_targets(args.data, ["deeplesion", "brats2015"], max_slices=3))
    before = measure(predictor, targets)
    with tempfile.TemporaryDirectory() as tmp:
        store = make_corrections(Path(args.train), Path(tmp) / "project", predictor,
                                 args.patients)
        data = to_train_set(store, predictor)
        n_images = len({r.image for r in store})
        train_set, val_set = split_by_group(data, 0.2)
        t0, c0 = time.monotonic(), time.process_time()
        result = finetune(model, train_set, val_set, predictor.cache, Path(tmp) / "echo",
                          TrainConfig(steps=args.steps, val_every=10, lr=1e-3,
                                      bf16=bf16_is_fast(args.device), device=args.device),
                          metadata={"modality": "ultrasound"})
        wall, cpu = time.monotonic() - t0, time.process_time() - c0
    after = measure(predictor, targets)  # the adapter's domain gate on (the default)
    ad = adapters_of(model)
    ad.use_gate = False
    ungated = measure(predictor, targets)
    ad.use_gate = True
    gate = ad.gates[ad.active]
    accepted: dict[str, list[bool]] = {}
    for t in targets:
        predictor.set_image(t.image, t.preset, t.bounds)
        accepted.setdefault(t.dataset, []).append(gate.accepts(predictor.embedding.features))
    accept_rate = {k: round(float(np.mean(v)), 3) for k, v in accepted.items()}
    print(f"fine-tuned on {n_images} corrected images ({len(data)} objects, "
          f"{len(train_set)} train / {len(val_set)} val) in {wall:.0f} s wall, {cpu:.0f} s CPU "
          f"({args.threads} threads, {args.device}), {result.steps} steps ({result.stopped})")
    print(f"domain gate: threshold {gate.threshold:.2f}; share of targets the adapter is used "
          f"on: {accept_rate}")
    metrics = ("box", "click1", "click3")
    print(f"{'dataset/label':<20}" + "".join(f"{m + ' before->after (ungated)':>30}"
                                             for m in metrics))
    for key in before:
        cells = "".join(f"{before[key][m]:>12.3f}->{after[key][m]:.3f} ({ungated[key][m]:.3f})"
                        for m in metrics)
        print(f"{key:<20}{cells}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "before": before, "after": after, "after_ungated": ungated,
            "gate": {**gate.summary(), "accepted": accept_rate},
            "wall_s": wall, "cpu_s": cpu, "steps": result.steps}, indent=1))
    adapters_of(model).activate("click")
    return 0


if __name__ == "__main__":
    sys.exit(main())
