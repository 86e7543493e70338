"""Corrections store: every committed object, saved at once, atomically; also training data.

An annotation project folder holds one record per committed object:

    <project>/corrections/<id>.json   image reference, embedding key, preset, label, prompts
    <project>/corrections/<id>.npz    the final mask (bool), compressed
    <project>/images/<pixel hash>.npz the 2D image (or slice) the object was drawn on, once

The mask and image are written first and the JSON last, each through a temporary file and a
rename, so a crash leaves either a complete record or none (never a half-written one). Keeping the
pixels makes the store self-contained: fine-tuning can re-encode an image whose embedding has
left the cache, even when the original file moved.
"""

from __future__ import annotations

import datetime as _dt
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .atomic import atomic_write
from .embeddings import pixel_hash
from .errors import InputError
from .intensity import get_preset
from .storage import user_data_dir

MODALITIES = ("any", "ct", "mri", "ultrasound", "dermoscopy", "endoscopy", "x-ray")  # offered


@dataclass
class Correction:
    """One committed object (its mask is read with `CorrectionStore.mask`)."""

    id: str
    key: str  # embedding cache key at commit time
    image: str  # images/<hash>.npz inside the project
    shape: tuple[int, int]
    preset: str
    bounds: list[float] | None
    label: int
    points: list[list[float]] = field(default_factory=list)
    point_labels: list[int] = field(default_factory=list)
    box: list[float] | None = None
    source: str | None = None  # the image file the user opened, when known
    slice: int | None = None
    modality: str = ""
    model: str = ""
    created: str = ""

    @property
    def group(self) -> str:
        """Validation split unit: the source file (a patient/study), else the image."""
        return self.source or self.image


def default_project_dir() -> Path:
    """Where the front ends save corrections unless told otherwise: $NAPARI_MEDSAM_PROJECT,
    else ~/.local/share/napari-medsam/project (user data, not a cache: never cleaned)."""
    return user_data_dir("NAPARI_MEDSAM_PROJECT", "project")


class CorrectionStore:
    """The corrections of one annotation project folder.

    Args:
        folder: the project folder (made when missing).
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        (self.folder / "corrections").mkdir(parents=True, exist_ok=True)
        (self.folder / "images").mkdir(parents=True, exist_ok=True)

    def add(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        key: str,
        label: int,
        preset="auto",
        bounds=None,
        points=None,
        point_labels=None,
        box=None,
        source: str | None = None,
        slice: int | None = None,
        modality: str = "",
        model: str = "",
    ) -> str:
        """Save one committed object; returns its id. Raises InputError for an empty mask."""
        mask = np.asarray(mask, bool)
        image = np.asarray(image)
        if mask.shape != image.shape[:2]:
            raise InputError(f"The mask {mask.shape} does not fit the image {image.shape[:2]}.")
        if not mask.any():
            raise InputError("An empty mask is not a correction; nothing was saved.")
        digest = pixel_hash(image)[:24]
        image_rel = f"images/{digest}.npz"
        if not (self.folder / image_rel).is_file():
            atomic_write(self.folder / image_rel,
                          lambda h: np.savez_compressed(h, image=image))
        stamp = _dt.datetime.now(_dt.timezone.utc)
        # microseconds in the id: records list in commit order, even several per second
        cid = f"{stamp:%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}"
        atomic_write(self.folder / "corrections" / f"{cid}.npz",
                      lambda h: np.savez_compressed(h, mask=mask))
        record = Correction(
            id=cid, key=key, image=image_rel, shape=tuple(int(v) for v in mask.shape),
            preset=get_preset(preset).name, bounds=None if bounds is None else
            [float(b) for b in bounds], label=int(label),
            points=[[float(x), float(y)] for x, y in (points or [])],
            point_labels=[int(v) for v in (point_labels or [])],
            box=None if box is None else [float(v) for v in np.asarray(box).reshape(4)],
            source=None if source is None else str(source), slice=slice, modality=modality,
            model=model, created=stamp.isoformat(timespec="seconds"),
        )
        text = json.dumps(record.__dict__, indent=1).encode()
        atomic_write(self.folder / "corrections" / f"{cid}.json", lambda h: h.write(text))
        return cid

    def __iter__(self) -> Iterator[Correction]:
        for path in sorted((self.folder / "corrections").glob("*.json")):
            try:
                data = json.loads(path.read_text())
                data["shape"] = tuple(data["shape"])
                yield Correction(**data)
            except (OSError, ValueError, TypeError):
                continue  # a damaged record is skipped, never fatal

    def __len__(self) -> int:
        return sum(1 for _ in (self.folder / "corrections").glob("*.json"))

    def mask(self, record: Correction) -> np.ndarray:
        with np.load(self.folder / "corrections" / f"{record.id}.npz", allow_pickle=False) as f:
            return f["mask"].astype(bool)

    def image(self, record: Correction) -> np.ndarray:
        with np.load(self.folder / record.image, allow_pickle=False) as f:
            return f["image"]

    def modalities(self) -> list[str]:
        return sorted({r.modality for r in self if r.modality})


def is_store(folder: str | Path) -> bool:
    """True when `folder` is an annotation project with a corrections store."""
    return (Path(folder) / "corrections").is_dir()


def to_train_set(store: CorrectionStore, predictor, encode_missing: bool = True):
    """A `TrainSet` of every correction (one object each), embedding missing images again."""
    from .training.data import TrainImage, TrainSet, ensure_embedding, to_model_frame

    side = int(predictor.model.prompt_encoder.mask_input_size[0])
    out = TrainSet()
    for rec in store:
        key = rec.key
        if key not in predictor.cache or rec.model != predictor.backend.cache_id:
            bounds = tuple(rec.bounds) if rec.bounds is not None else None
            key = ensure_embedding(predictor, store.image(rec), get_preset(rec.preset), bounds,
                                   encode_missing)
            if key is None:
                continue
        frame, size = to_model_frame(store.mask(rec).astype(np.uint8), side)
        if frame.any():
            out.add(TrainImage(key, frame, size, rec.group, rec.modality or "corrections",
                               rec.source or rec.image))
    return out


def record_commit(store: CorrectionStore, session, mask: np.ndarray, label: int, z: int,
                  prompts=None) -> str:
    """Save an object slice a `Session` commits (it calls this when `session.corrections` is
    set), with the prompts that made it when known (`PromptState`), the session's `source` and
    `modality`."""
    z = z if session.is_volume else None
    image = session.slice_image(z)
    pred = session.predictor
    return store.add(
        image, mask, key=pred.image_key(image, session.preset, session.bounds), label=label,
        preset=session.preset, bounds=session.bounds,
        points=prompts.points if prompts else None,
        point_labels=prompts.labels if prompts else None,
        box=prompts.box if prompts else None, source=session.source, slice=z,
        modality=session.modality, model=pred.backend.cache_id,
    )
