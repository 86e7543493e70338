"""The torch backend on a GPU: speed and mask agreement against torch fp32 on the CPU (same run).

On CUDA the torch backend runs the decoder in fp32 and the encoder under fp16 autocast for 1024 px
ViT-B encoders only (`core/backends/torch_backend.py`). This checks that choice on a GPU:
1. Speed: encoder per 256x256 slice, click (box -> mask) and refine (box + click + previous
   logits) for CPU fp32 (the reference), CUDA fp32 and CUDA fp16; medians, ratios to the CPU.
2. Agreement per dev dataset (the targets and prompts of bench_backends.py): box and corrective
   click masks of CUDA fp16 / fp32 against CPU fp32, and Dice against ground truth.
3. `build_backend(RuntimeSpec())` picks the GPU by itself (what the CLI, napari and Slicer get).
Exits with a message where torch sees no GPU. Data: ../shared/data or $NAPARI_MEDSAM_DATA.

    python benchmarks/bench_cuda.py --threads 2 --json cuda.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_backends import (  # noqa: E402
    DATA,
    agreement,
    agreement_table,
    pick_targets,
    speed,
)

from napari_medsam.core.backends.torch_backend import TorchBackend  # noqa: E402
from napari_medsam.core.embeddings import EmbeddingCache  # noqa: E402
from napari_medsam.core.intensity import get_preset  # noqa: E402
from napari_medsam.core.io import read_image  # noqa: E402
from napari_medsam.core.predictor import Predictor, to_unit_rgb  # noqa: E402
from napari_medsam.core.runtime import RuntimeSpec, build_backend  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="CPU threads of the reference")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--per-dataset", type=int, default=12)
    ap.add_argument("--volume-slices", type=int, default=64)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("torch sees no GPU here: nothing to check.")
        return 1
    torch.set_num_threads(args.threads)
    report: dict = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
                    "cuda": torch.version.cuda, "cpu_threads": args.threads}
    print(f"GPU {report['gpu']}, torch {report['torch']} (CUDA {report['cuda']}), "
          f"CPU reference on {args.threads} threads")

    default = build_backend(RuntimeSpec())
    report["default_backend"] = default.describe()
    print(f"build_backend(RuntimeSpec()) -> {default.describe()}, cache id {default.cache_id}")
    gpu_model = default.model
    backends = {"cpu fp32": build_backend(RuntimeSpec(profile="torch", device="cpu")),
                "cuda fp32": TorchBackend(gpu_model, half=False),
                "cuda fp16": TorchBackend(gpu_model, half=True)}

    camus = sorted((DATA / "echo" / "camus" / "images").glob("*.png"))
    pixels = read_image(camus[0]).data if camus else np.random.default_rng(0).random((256, 256))
    unit = to_unit_rgb(pixels, get_preset("auto"))
    res = speed(backends, unit, args.repeats)
    report["speed"] = res
    base = res["cpu fp32"]
    print(f"\nspeed (wall time, median of {args.repeats})")
    print(f"{'backend':10s} {'encode ms':>10s} {'x cpu':>7s} {'click ms':>9s} {'x cpu':>7s} "
          f"{'refine ms':>10s} {'x cpu':>7s}")
    for name, r in res.items():
        print(f"{name:10s} {r['encode']:10.1f} {base['encode'] / r['encode']:7.1f} "
              f"{r['click']:9.2f} {base['click'] / r['click']:7.1f} {r['refine']:10.2f} "
              f"{base['refine'] / r['refine']:7.1f}")

    volume = np.repeat(unit[None], args.volume_slices, axis=0)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for image in volume:
        default.encode(image)
    per_slice = 1000 * (time.perf_counter() - start) / len(volume)
    report["volume_ms_per_slice"] = per_slice
    print(f"\nembedding {len(volume)} slices one by one on the GPU "
          f"({default.encoder_variant}): {per_slice:.1f} ms per slice")

    if (DATA / "manifest.json").is_file():
        reference = Predictor(backend=backends["cpu fp32"], cache=EmbeddingCache())
        others = {name: Predictor(backend=backends[name], cache=EmbeddingCache())
                  for name in ("cuda fp32", "cuda fp16")}
        print("\nagreement with CPU fp32 (box, tight +5 px; then one corrective click)")
        rows = agreement(reference, others, pick_targets(args.per_dataset))
        report["agreement"] = agreement_table(rows, {}, ("backend", "GT cpu", "GT gpu"))
    else:
        print(f"\nno dev data at {DATA}: agreement skipped")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
