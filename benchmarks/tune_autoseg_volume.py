"""Fit the automatic heads' volume-mode thresholds (`autoseg.volume`: the end step's score and
overlap, the end-sliver fraction, the smallest piece kept) on the training patients held back
when the heads' modes were chosen (`scripts/train_heads.py`'s split), and show the same grid on
the dev patients.

Each stack is segmented slice by slice once; every grid point then only re-runs the volume pass
(its box decodes are memoised). Scored per slice as `autoseg.evaluate` scores a head. How the
shipped values were chosen: docs/autoseg.md ("Volumes as volumes").

    python benchmarks/tune_autoseg_volume.py --cache-dir EMB \
        --heads cardiac-mri-patch abdomen-mri-shape
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "scripts"))

import bench_autoseg_volume as bench  # noqa: E402
import train_heads  # noqa: E402

from napari_medsam.core.autoseg import load_head, segment_volume  # noqa: E402
from napari_medsam.core.autoseg import volume as vol  # noqa: E402
from napari_medsam.core.autoseg.evaluate import per_slice_dice  # noqa: E402
from napari_medsam.core.embeddings import EmbeddingCache  # noqa: E402
from napari_medsam.core.runtime import RuntimeSpec, build_predictor  # noqa: E402
from napari_medsam.core.slice_stacks import stacks  # noqa: E402

GRID = {"MIN_END_SCORE": [0.7, 0.8, 0.9], "MIN_END_OVERLAP": [0.0, 0.3, 0.5],
        "MIN_END_FRACTION": [0.0, 0.1, 0.2, 0.3, 0.5],
        "MIN_PIECE_FRACTION": [0.0, 0.05, 0.1, 0.2, 1.0]}


def held_back(train: str, task: str) -> set[str]:
    """The case names train_heads.py held back for choosing a task's modes."""
    sets, _, _, _, n_val = train_heads.TASKS[task]
    _, val = train_heads.split_patients(train_heads.task_pairs(train, sets), n_val)
    return {p["case"].split("/", 1)[1] for p in val}


def memoised_decodes() -> None:
    """Decode each (stack, slice, guide) box once across the grid."""
    memo, decode = {}, vol._decode_box

    def cached(session, z, guide):
        key = (id(session.image), z, hash(guide.tobytes()))
        if key not in memo:
            memo[key] = decode(session, z, guide)
        return memo[key]

    vol._decode_box = cached


def grid_scores(predictor, head, found) -> dict[tuple, float]:
    """Mean over structures of the per-slice Dice, per grid point."""
    points = list(itertools.product(*GRID.values()))
    scores = {p: {n: [] for n in head.names} for p in points}
    for stack in found:
        session = bench.as_session(predictor, stack)
        alone = segment_volume(session, head, consistent=False)
        for point in points:
            for name, value in zip(GRID, point, strict=True):
                setattr(vol, name, value)
            labels = vol.make_consistent(session, alone, head.structures,
                                         one_object=head.keep_largest)
            for value, struct in zip(head.structures, head.names, strict=True):
                scores[point][struct] += per_slice_dice(labels == value, stack.labels == value)
    return {p: float(np.mean([np.mean(v) for v in s.values()])) for p, s in scores.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--train", default=str(REPO.parent / "shared" / "train"))
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--heads", nargs="+", default=["cardiac-mri-patch", "abdomen-mri-shape"])
    args = p.parse_args()
    predictor = build_predictor(RuntimeSpec(profile="accurate"),
                                EmbeddingCache(memory_bytes=1 << 30, disk_dir=args.cache_dir))
    memoised_decodes()
    shipped = tuple(getattr(vol, name) for name in GRID)
    for name in args.heads:
        task = name.rsplit("-", 1)[0]
        head = load_head(name, predictor)
        cases = held_back(args.train, task)
        train = [s for s in stacks(args.train, bench.TASKS[task])
                 if s.name.split("#")[0].rsplit("_frame", 1)[0] in cases]
        dev = stacks(args.data, bench.TASKS[task])
        fit, report = grid_scores(predictor, head, train), grid_scores(predictor, head, dev)
        # ties (to 4 decimals) go to the point nearest the shipped one
        def rank(q, fit=fit):
            return -round(fit[q], 4), sum(abs(a - b) for a, b in zip(q, shipped, strict=True))

        ranked = sorted(fit, key=rank)
        best = ranked[0]
        print(f"{name}: {len(train)} held-back stacks, {len(dev)} dev stacks; "
              f"({', '.join(GRID)})")
        for point in ranked[:10] + ([shipped] if shipped not in ranked[:10] else []):
            tag = " (shipped)" if point == shipped else " (best)" if point == best else ""
            print(f"  {point}: held back {fit[point]:.4f}, dev {report[point]:.4f}{tag}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
