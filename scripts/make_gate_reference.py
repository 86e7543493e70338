"""Measure the reference spread the adapters' domain gates start from (`core.domain_gate`).

For each dataset of the training folder (CAMUS echo, PH2 dermoscopy), the spread of the image
embedding profiles (`domain_gate.describe`: per-channel mean and std, and
per-channel means over a 4 x 4 layout of regions) across its images; pooled over datasets, it says
how much images of one modality differ from patient to patient. Saved per model id into
napari_medsam/resources/domain_reference.safetensors (4,608 floats for LiteMedSAM).

    python scripts/make_gate_reference.py --cache /work/cache/emb [--per-dataset 200]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from napari_medsam.core.domain_gate import REFERENCE_FILE, describe  # noqa: E402
from napari_medsam.core.embeddings import EmbeddingCache, default_cache_dir  # noqa: E402
from napari_medsam.core.evaluation import load_manifest  # noqa: E402
from napari_medsam.core.io import read_image  # noqa: E402
from napari_medsam.core.predictor import Predictor  # noqa: E402
from napari_medsam.core.runtime import RuntimeSpec, load_torch  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", default=str(REPO.parent / "shared" / "train"))
    p.add_argument("--cache", default=str(default_cache_dir() / "embeddings"))
    p.add_argument("--per-dataset", type=int, default=200, help="images per dataset (spread)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from safetensors.numpy import load_file, save_file

    model = load_torch(RuntimeSpec(click_adapter=False))
    predictor = Predictor(model, EmbeddingCache(disk_dir=args.cache))
    pairs = load_manifest(Path(args.train))
    variances = []
    for dataset in sorted({p["dataset"] for p in pairs}):
        chosen = [p for p in pairs if p["dataset"] == dataset]
        step = max(1, len(chosen) // args.per_dataset)
        profiles = []
        for pair in chosen[::step][: args.per_dataset]:
            predictor.set_image(read_image(Path(args.train) / pair["image"]).data)
            profiles.append(describe(predictor.embedding.features))
        variances.append(np.var(profiles, axis=0))
        print(f"{dataset}: {len(profiles)} images")
    spread = np.sqrt(np.mean(variances, axis=0)).astype(np.float32)
    found = load_file(str(REFERENCE_FILE)) if REFERENCE_FILE.is_file() else {}
    found[model.model_id] = spread
    save_file(found, str(REFERENCE_FILE), metadata={
        "what": "pooled per-dataset std of embedding profiles (core/domain_gate.py)",
        "source": "../shared/train (CAMUS echo, PH2 dermoscopy)"})
    print(f"wrote {REFERENCE_FILE} ({model.model_id}: {spread.size} values)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
