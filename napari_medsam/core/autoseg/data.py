"""Training/validation examples for the heads: cached embedding + ground truth on the 256 grid.

Examples come from a labelled folder (a `manifest.json` of image/mask pairs, as in the project's
train and dev folders, or `images/` + `masks/` with matching file names) or straight from arrays
(the annotations a user committed in a session). Embeddings go through the predictor's cache, so a
folder embedded once (e.g. `napari-medsam embed`) trains in seconds.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..embeddings import Embedding
from ..errors import CancelledError, InputError
from ..intensity import suggest_preset
from ..io import read_image
from ..predictor import Predictor
from .decoding import to_grid


@dataclass
class Example:
    """One labelled 2D image, ready for training without the image encoder."""

    features: torch.Tensor  # (256, 64, 64) float16
    target: torch.Tensor  # (S, 256, 256) float16 foreground fraction per structure
    truth: np.ndarray  # (H, W) label map on the original grid (for Dice)
    embedding: Embedding  # geometry (original and input size); features dropped
    case: str = ""
    name: str = ""


def make_example(predictor: Predictor, image: np.ndarray, label_map: np.ndarray,
                 structures: list[int], preset=None, case: str = "", name: str = "") -> Example:
    """Embed (or take from the cache) one image and pair it with its label map."""
    label_map = np.asarray(label_map)
    if label_map.shape != np.asarray(image).shape[:2]:
        raise InputError(f"Label map {label_map.shape} does not fit the image {image.shape[:2]}"
                         f"{' (' + name + ')' if name else ''}.")
    preset = preset if preset is not None else suggest_preset(image)
    predictor.set_image(image, preset)
    emb = predictor.embedding
    geometry = Embedding(np.empty(0, np.float16), emb.original_size, emb.input_size)
    target = to_grid(label_map, structures, emb, predictor.model.image_size)
    return Example(torch.from_numpy(emb.features).half(), target.half(),
                   label_map.astype(np.uint16), geometry, case, name)


def list_pairs(data_dir: str | Path, dataset: str | None = None) -> list[dict]:
    """Image/mask pairs of a folder: its manifest.json, else images/ + masks/ by file name.

    Each pair is {"image", "mask", "case", "dataset", "modality"} with absolute paths.
    """
    root = Path(data_dir)
    manifest = root / "manifest.json"
    if manifest.is_file():
        pairs = json.loads(manifest.read_text())["pairs"]
        out = [{**p, "image": str(root / p["image"]), "mask": str(root / p["mask"])}
               for p in pairs if dataset is None or p["dataset"] == dataset]
    elif (root / "images").is_dir() and (root / "masks").is_dir():
        masks = {p.stem: p for p in (root / "masks").iterdir() if p.is_file()}
        out = [{"image": str(p), "mask": str(masks[p.stem]), "case": p.stem,
                "dataset": dataset or root.name, "modality": ""}
               for p in sorted((root / "images").iterdir()) if p.stem in masks]
    else:
        raise InputError(f"{root} has neither a manifest.json nor images/ and masks/ folders "
                         "with matching file names: nothing to train on.")
    out = [p for p in out if not p["image"].endswith((".nii", ".nii.gz"))] or out
    if not out:
        raise InputError(f"No image/mask pairs{' of ' + dataset if dataset else ''} in {root}.")
    return out


def pick_pairs(pairs: list[dict], n: int | None, seed: int = 0,
               one_per_case: bool = True) -> list[dict]:
    """`n` pairs at random (seeded), from as many different patients as possible."""
    if n is None or n >= len(pairs):
        return list(pairs)
    rng = np.random.default_rng(seed)
    order = [pairs[i] for i in rng.permutation(len(pairs))]
    if not one_per_case:
        return order[:n]
    first, rest, seen = [], [], set()
    for p in order:
        (rest if p["case"] in seen else first).append(p)
        seen.add(p["case"])
    return (first + rest)[:n]


def load_examples(
    predictor: Predictor,
    pairs: Iterable[dict],
    structures: list[int],
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> list[Example]:
    """Read, embed (cached) and pair every image with its mask; 2D images only."""
    pairs = list(pairs)
    examples = []
    for i, p in enumerate(pairs):
        if cancel is not None and cancel():
            raise CancelledError(f"Loading cancelled after {i} of {len(pairs)} images.")
        img = read_image(p["image"])
        if img.is_volume:
            raise InputError(f"{p['image']} is a volume: heads train on 2D images or slices.")
        truth = np.asarray(read_image(p["mask"]).data)
        preset = suggest_preset(img.data, p.get("modality", ""))
        examples.append(make_example(predictor, img.data, truth, structures, preset,
                                     p.get("case", ""), Path(p["image"]).name))
        if progress is not None:
            progress(i + 1, len(pairs))
    return examples
