"""Core speed: median encoder ms per slice, decoder ms per prompt, cache-hit speed-up (ratios).

Run: python benchmarks/bench_core.py [--repeats N] [--threads T]
Uses real dev images when ../shared/data is present, else the bundled sample CT.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from napari_medsam.core.embeddings import EmbeddingCache  # noqa: E402
from napari_medsam.core.io import read_image  # noqa: E402
from napari_medsam.core.predictor import Predictor  # noqa: E402
from napari_medsam.core.runtime import RuntimeSpec, load_torch  # noqa: E402
from napari_medsam.sample import sample_ct_path  # noqa: E402


def images(n: int) -> list[np.ndarray]:
    data = REPO.parent / "shared" / "data" / "echo" / "camus" / "images"
    if data.is_dir():
        return [read_image(p).data for p in sorted(data.glob("*.png"))[:n]]
    ct = read_image(sample_ct_path()).data
    return [ct[z] for z in range(10, 10 + n)]


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_torch(RuntimeSpec(device="cpu"))
    imgs = images(args.repeats + 1)
    with tempfile.TemporaryDirectory() as tmp:
        p = Predictor(model, EmbeddingCache(disk_dir=tmp))
        p.set_image(imgs[-1])  # warm-up
        it = iter(imgs[: args.repeats])
        enc = median_ms(lambda: p.set_image(next(it)), args.repeats)  # misses: encoder runs
        it = iter(imgs[: args.repeats])
        mem_hit = median_ms(lambda: p.set_image(next(it)), args.repeats)
        p.cache.clear_memory()
        it = iter(imgs[: args.repeats])
        disk_hit = median_ms(lambda: p.set_image(next(it)), args.repeats)
        h, w = imgs[0].shape[:2]
        box = np.array([w * 0.3, h * 0.3, w * 0.7, h * 0.6])
        p.set_image(imgs[0])
        dec = median_ms(lambda: p.predict(box=box), args.repeats * 4)
        pts = median_ms(lambda: p.predict(points=[[w / 2, h / 2]], labels=[1]), args.repeats * 4)
    print(f"threads {torch.get_num_threads()}, image {imgs[0].shape}, median of {args.repeats}")
    print(f"encoder (set_image, cache miss)   {enc:9.1f} ms per slice")
    print(f"set_image, memory cache hit       {mem_hit:9.2f} ms  speed-up x{enc / mem_hit:,.0f}")
    print(f"set_image, disk cache hit         {disk_hit:9.2f} ms  speed-up x{enc / disk_hit:,.0f}")
    print(f"decoder per box prompt            {dec:9.1f} ms")
    print(f"decoder per point prompt          {pts:9.1f} ms")


if __name__ == "__main__":
    main()
