"""First mask on a newly opened volume, in a fresh process: with and without the model warmed
ahead (`Runtime.warm`, what the napari dock starts when it opens).

Each run is its own process (nothing compiled or cached before it). The dock opens at t = 0; the
user's first box comes --think seconds later (opening a file and drawing take at least that);
timed is what the user waits from the box to the mask: read the NIfTI, build the backend unless
it is ready, embed the slice, decode. "cold" builds everything on that first box, as before.

    python benchmarks/bench_first_mask.py [--profile fast] [--runs 3] [--think 1.5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data"
VOLUME = "ct/deeplesion/images/CT_Lesion_000001_02_01_008-023.nii.gz"


def child(mode: str, profile: str, think: float) -> dict:
    """One process: (maybe) warm at t = 0, wait `think`, then open -> box -> mask."""
    import numpy as np

    from napari_medsam.core.embeddings import EmbeddingCache
    from napari_medsam.core.intensity import suggest_preset
    from napari_medsam.core.io import read_image
    from napari_medsam.core.metrics import bbox
    from napari_medsam.core.runtime import Runtime, RuntimeSpec

    runtime, spec = Runtime(), RuntimeSpec(profile=profile)
    if mode == "warm":
        threading.Thread(target=runtime.warm, args=(spec,), daemon=True).start()
    time.sleep(think)
    t0 = time.perf_counter()
    image = read_image(DATA / VOLUME).data
    truth = read_image(DATA / VOLUME.replace("/images/", "/labels/")).data > 0
    z = int(np.nonzero(truth.any(axis=(1, 2)))[0].mean())
    predictor = runtime.predictor(spec, EmbeddingCache(memory_bytes=1 << 28))
    t_ready = time.perf_counter()
    preset = suggest_preset(image, "ct")
    predictor.set_image(image[z], preset, preset.bounds(image))
    result = predictor.predict(box=bbox(truth[z], 5))
    t1 = time.perf_counter()
    return {"mode": mode, "first_mask_s": t1 - t0, "backend_wait_s": t_ready - t0,
            "mask_pixels": int(result.masks[0].sum())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="fast")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--think", type=float, default=1.5,
                    help="seconds from the dock opening to the first box")
    ap.add_argument("--child", choices=["warm", "cold"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.profile, args.think)))
        return 0
    if not (DATA / VOLUME).is_file():
        print(f"{DATA / VOLUME} is missing: nothing to measure")
        return 1
    runs: dict[str, list[dict]] = {"cold": [], "warm": []}
    for _ in range(args.runs):  # interleaved, so a busy moment hits both alike
        for mode in runs:
            out = subprocess.run([sys.executable, __file__, "--child", mode, "--profile",
                                  args.profile, "--think", str(args.think)],
                                 capture_output=True, text=True, check=True)
            runs[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
    cold = statistics.median(r["first_mask_s"] for r in runs["cold"])
    warm = statistics.median(r["first_mask_s"] for r in runs["warm"])
    print(f"profile {args.profile}, first box {args.think} s after the dock opens, "
          f"median of {args.runs} fresh processes each:")
    for mode, median in (("cold", cold), ("warm", warm)):
        waits = statistics.median(r["backend_wait_s"] for r in runs[mode])
        print(f"  {mode:4s}: box -> mask {median:.2f} s (of which reading + backend "
              f"{waits:.2f} s); runs {[round(r['first_mask_s'], 2) for r in runs[mode]]}")
    print(f"  warm / cold: {warm / cold:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
