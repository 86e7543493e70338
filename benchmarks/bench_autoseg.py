"""Automatic segmentation speed: ms per `auto` call on a cached embedding, per mode, as a ratio
to one box-prompt decode measured in the same process (the encoder is not timed: the embedding
comes from the cache, as in the annotation loop).

Run: python benchmarks/bench_autoseg.py [--repeats N] [--threads T]
Needs the shipped heads and a CAMUS dev image (../shared/data), else the bundled sample CT slice.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_core import median_ms  # noqa: E402  (benchmarks/ is on sys.path as the script's folder)

from napari_medsam.core.autoseg import load_head, segment_embedding  # noqa: E402
from napari_medsam.core.io import read_image  # noqa: E402
from napari_medsam.core.metrics import bbox  # noqa: E402
from napari_medsam.core.runtime import RuntimeSpec, build_predictor  # noqa: E402
from napari_medsam.sample import sample_ct_path  # noqa: E402


def image() -> np.ndarray:
    data = REPO.parent / "shared" / "data" / "echo" / "camus" / "images"
    if data.is_dir():
        return read_image(sorted(data.glob("*.png"))[0]).data
    return read_image(sample_ct_path()).data[15]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    predictor = build_predictor(RuntimeSpec())
    img = image()
    predictor.set_image(img, "auto")
    h, w = img.shape[:2]
    box = bbox(np.ones((h, w), bool)[h // 4 : 3 * h // 4], 0)
    base = median_ms(lambda: predictor.predict(box=box), args.repeats)
    print(f"box-prompt decode: {base:.1f} ms (baseline, {args.threads} threads)")
    for name in ("camus-patch", "camus-shape"):
        head = load_head(name, predictor)
        for mode in ("dense", "box", "refine"):
            ms = median_ms(lambda: segment_embedding(predictor, head, mode), args.repeats)  # noqa: B023
            print(f"{name:12s} {mode:7s} {ms:7.1f} ms  = {ms / base:4.1f} x one box decode "
                  f"({len(head.structures)} structures)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
