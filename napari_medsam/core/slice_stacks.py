"""Volumes rebuilt from manifest folders of 2D slices (`<case>_s<NN>.png`, how the MRI sets of
../shared/data and ../shared/train are stored): for measuring what works on volumes (propagation,
automatic heads volume by volume) on patients that only exist as slices.

Slices of one case are stacked in slice order; a gap in the numbering (slices without a label
were left out of the folders, or every 3rd slice was kept) splits the case into runs of
consecutive slices, each its own volume, unless `step` says which spacing counts as consecutive.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .evaluation import load_manifest
from .io import read_image

SLICE = re.compile(r"^(?P<case>.+)_s(?P<index>\d+)$")


@dataclass
class SliceStack:
    """One rebuilt volume: (Z, H, W) image and labels, and the slice numbers they came from."""

    name: str
    dataset: str
    image: np.ndarray
    labels: np.ndarray
    indices: list[int] = field(default_factory=list)


def stacks(data_dir: str | Path, datasets: list[str], step: int = 1,
           min_slices: int = 3) -> list[SliceStack]:
    """Every run of at least `min_slices` consecutive slices of the given datasets.

    Args:
        step: the numbering step of consecutive slices (3 for LA: every 3rd slice is kept).
    """
    data_dir = Path(data_dir)
    groups: dict[tuple[str, str], list[tuple[int, dict]]] = defaultdict(list)
    for pair in load_manifest(data_dir):
        if pair["dataset"] not in datasets:
            continue
        match = SLICE.match(Path(pair["image"]).name.split(".")[0])
        if match:
            groups[(pair["dataset"], match["case"])].append((int(match["index"]), pair))
    out = []
    for (dataset, case), items in sorted(groups.items()):
        items.sort(key=lambda t: t[0])
        runs: list[list[tuple[int, dict]]] = [[items[0]]]
        for item in items[1:]:
            if item[0] - runs[-1][-1][0] == step:
                runs[-1].append(item)
            else:
                runs.append([item])
        for r, run in enumerate(runs):
            if len(run) < min_slices:
                continue
            images = [np.asarray(read_image(data_dir / p["image"]).data) for _, p in run]
            labels = [np.asarray(read_image(data_dir / p["mask"]).data) for _, p in run]
            if len({im.shape for im in images}) != 1:
                continue
            name = case if len(runs) == 1 else f"{case}#{r}"
            out.append(SliceStack(name, dataset, np.stack(images), np.stack(labels),
                                  [i for i, _ in run]))
    return out
