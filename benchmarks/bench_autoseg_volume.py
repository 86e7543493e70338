"""Automatic heads on volumes: slice by slice vs as a volume (`autoseg.volume`), 3D Dice per
structure on the dev patients' stacks (ACDC + MS-CMR for cardiac-mri, CHAOS for abdomen-mri),
and the 2D per-slice Dice of both modes next to a ground-truth box on each slice (the box-prompt
bound), scored as `autoseg.evaluate` scores a head: a structure drawn on a slice without it counts
as 0, the box only where the structure is. `presence` splits that loss: the Dice on the slices
that hold the structure (the box's slices; a slice missed counts 0), and the number of slices
drawn without the structure and missed.

    python benchmarks/bench_autoseg_volume.py --cache-dir /work/cache/emb
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from napari_medsam.core.autoseg import list_heads, load_head, segment_volume  # noqa: E402
from napari_medsam.core.autoseg.evaluate import per_slice_dice, presence_split  # noqa: E402
from napari_medsam.core.embeddings import EmbeddingCache  # noqa: E402
from napari_medsam.core.intensity import get_preset  # noqa: E402
from napari_medsam.core.metrics import bbox, dice  # noqa: E402
from napari_medsam.core.runtime import RuntimeSpec, build_predictor  # noqa: E402
from napari_medsam.core.slice_stacks import stacks  # noqa: E402

TASKS = {"cardiac-mri": ["acdc", "mscmr"], "abdomen-mri": ["chaos_t2"]}
MRI = get_preset("mri")


def as_session(predictor, stack):
    """What `segment_volume` needs of a Session, over a stack embedded slice by slice (the keys
    of the 2D slices, already in the cache)."""
    return SimpleNamespace(predictor=predictor, image=stack.image, n_slices=len(stack.image),
                           embed=lambda z: predictor.set_image(stack.image[z], MRI))


def box_bound(session, truth: np.ndarray) -> list[float]:
    """2D Dice of the model's mask for the ground truth's box (+5 px) on each slice holding it."""
    out = []
    for z in np.nonzero(truth.any(axis=(1, 2)))[0]:
        session.embed(int(z))
        mask = session.predictor.predict(box=bbox(truth[z], 5), zoom=False).masks[0]
        out.append(dice(mask, truth[z]))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--kinds", default="patch,shape")
    p.add_argument("--tasks", default=",".join(TASKS), help="e.g. abdomen-mri")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "autoseg_volume.json"))
    args = p.parse_args()
    predictor = build_predictor(RuntimeSpec(profile="accurate"),
                                EmbeddingCache(memory_bytes=1 << 30, disk_dir=args.cache_dir))
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {}  # other heads' entries stay
    for task, datasets in TASKS.items():
        if task not in args.tasks.split(","):
            continue
        found = stacks(args.data, datasets)
        for kind in args.kinds.split(","):
            name = f"{task}-{kind}"
            if name not in list_heads():
                print(name, "is not shipped: skipped", flush=True)
                continue
            head = load_head(name, predictor)
            scores = {mode: {n: [] for n in head.names} for mode in ("slices", "volume")}
            flat = {mode: {n: [] for n in head.names} for mode in ("slices", "volume", "box")}
            split = {mode: {n: [[], 0, 0] for n in head.names} for mode in ("slices", "volume")}
            for stack in found:
                session = as_session(predictor, stack)
                for mode, consistent in (("slices", False), ("volume", True)):
                    labels = segment_volume(session, head, consistent=consistent)
                    for value, struct in zip(head.structures, head.names, strict=True):
                        truth = stack.labels == value
                        if truth.any():
                            scores[mode][struct].append(dice(labels == value, truth))
                        flat[mode][struct] += per_slice_dice(labels == value, truth)
                        held, extra, missed = presence_split(labels == value, truth)
                        acc = split[mode][struct]
                        acc[0] += held
                        acc[1] += extra
                        acc[2] += missed
                for value, struct in zip(head.structures, head.names, strict=True):
                    flat["box"][struct] += box_bound(session, stack.labels == value)
            entry = {mode: {n: round(float(np.mean(v)), 4) for n, v in s.items()}
                     for mode, s in scores.items()}
            entry["per_slice"] = {mode: {n: round(float(np.mean(v)), 4) for n, v in s.items()}
                                  for mode, s in flat.items()}
            entry["presence"] = {  # where the per-slice Dice is lost: see the docstring
                mode: {n: {"held": round(float(np.mean(v[0])), 4), "held_slices": len(v[0]),
                           "drawn_without": v[1], "missed": v[2]} for n, v in s.items()}
                for mode, s in split.items()}
            entry["volumes"] = len(found)
            results[name] = entry
            print(name, json.dumps(entry), flush=True)
    out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
