"""Which images an adapter was trained for, so it is not applied to images unlike them.

An adapter fine-tuned on one modality can hurt others: an echo adapter left on cost 6.5 Dice
points on colonoscopy polyps and 7 on CT slices. The gate keeps a profile of the training images'
embeddings; an image whose embedding lies far from it is decoded as if the adapter were not
selected. It costs a few ms per decode and needs only numpy (the ONNX path runs without torch).

The profile: per-channel mean and std over the embedding grid, and per-channel means over a
4 x 4 layout of regions. The distance: the root-mean-square z-score against the training images'
mean, the spread per feature blending the images' own spread with a reference spread shipped for
LiteMedSAM (how much one modality varies between patients, measured on ../shared/train), so a
handful of images gives a usable gate. The threshold: how far held-out patients of the training
set fall (leave-one-group-out), plus a margin, within bounds.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .storage import env_switch

log = logging.getLogger(__name__)
GATE_FILE = "domain_gate.safetensors"
REFERENCE_FILE = Path(__file__).resolve().parents[1] / "resources" / "domain_reference.safetensors"
PRIOR_IMAGES = 8  # weight of the reference spread, in images
SCALE_FLOOR = 0.1  # x the median spread: features constant in training do not dominate
MARGIN = 1.15  # threshold = MARGIN x the farthest held-out training image ...
THRESHOLD_RANGE = (1.75, 2.0)  # ... within these bounds (measurements in docs/adapters.md)
GATE_ENV = "NAPARI_MEDSAM_ADAPTER_GATE"


def gate_wanted() -> bool:
    """False when $NAPARI_MEDSAM_ADAPTER_GATE is 0/false/no/off (adapters apply everywhere)."""
    return env_switch(GATE_ENV)


GRID = 4  # the embedding's mean over a GRID x GRID layout of regions is part of the profile


def describe(features) -> np.ndarray:
    """(C * (2 + GRID**2),) float64 profile of one embedding (C, H, W): per-channel mean and
    std over the whole grid, and per-channel means over GRID x GRID regions (where things are:
    an echo sector, a body outline, a round dermoscopy field).

    Accepts a numpy array or a torch tensor (copied to numpy: `DomainGate.check` does this once
    per image).
    """
    if hasattr(features, "detach"):  # torch, without importing it here
        features = features.detach().float().cpu().numpy()
    shape = tuple(features.shape[-3:])
    rows = np.linspace(0, shape[1], GRID + 1).astype(int)
    cols = np.linspace(0, shape[2], GRID + 1).astype(int)
    x = np.asarray(features, dtype=np.float32).reshape(shape)
    flat = x.reshape(shape[0], -1)
    parts = [flat.mean(1), flat.std(1)]
    parts += [x[:, rows[i]:rows[i + 1], cols[j]:cols[j + 1]].mean((1, 2))
              for i in range(GRID) for j in range(GRID)]
    return np.concatenate(parts).astype(np.float64)


def reference_spread(model_id: str) -> np.ndarray | None:
    """The shipped patient-to-patient spread of profiles for `model_id` (None: none shipped)."""
    if not REFERENCE_FILE.is_file():
        return None
    from safetensors.numpy import load_file

    found = load_file(str(REFERENCE_FILE))
    return found[model_id].astype(np.float64) if model_id in found else None


def _fit_stats(profiles: np.ndarray, reference: np.ndarray | None
               ) -> tuple[np.ndarray, np.ndarray]:
    n = len(profiles)
    var = profiles.var(axis=0) * n
    if reference is not None and reference.shape == var.shape:
        var = var + PRIOR_IMAGES * reference**2
        n += PRIOR_IMAGES
    spread = np.sqrt(var / n)
    return profiles.mean(axis=0), np.maximum(spread, SCALE_FLOOR * np.median(spread) + 1e-9)


def _distance(profiles: np.ndarray, center: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return np.sqrt((((np.atleast_2d(profiles) - center) / scale) ** 2).mean(axis=1))


@dataclass
class DomainGate:
    """A profile of an adapter's training images and the distance beyond which it is off."""

    center: np.ndarray
    scale: np.ndarray
    threshold: float
    images: int = 0
    # (embedding object, distance) of the last check: every click on one image reuses it
    _last: tuple[object, float] | None = field(default=None, init=False, repr=False,
                                                compare=False)

    @classmethod
    def fit(cls, profiles: np.ndarray, groups: Sequence[str] | None = None,
            reference: np.ndarray | None = None) -> DomainGate:
        """Fit on the training images' profiles (`describe`), grouped by patient.

        Args:
            reference: the model's `reference_spread` (None: the images' own spread only).

        The threshold is MARGIN x the largest distance of an image to the profile of the other
        groups (each image on its own when there is one group), within THRESHOLD_RANGE.
        """
        profiles = np.asarray(profiles, dtype=np.float64)
        if profiles.ndim != 2 or len(profiles) == 0:
            raise ValueError("DomainGate.fit needs at least one image profile")
        groups = list(groups) if groups is not None else [str(i) for i in range(len(profiles))]
        if len(set(groups)) < 2:
            groups = [str(i) for i in range(len(profiles))]
        names = sorted(set(groups))
        held_out = [0.0]
        if len(names) >= 2:
            for name in names:
                out = np.array([g == name for g in groups])
                center, scale = _fit_stats(profiles[~out], reference)
                held_out.append(float(_distance(profiles[out], center, scale).max()))
        low, high = THRESHOLD_RANGE
        threshold = min(high, max(low, MARGIN * max(held_out)))
        center, scale = _fit_stats(profiles, reference)
        return cls(center, scale, float(threshold), len(profiles))

    def distance(self, features) -> float:
        """How far an embedding lies from the training images (about 1 for theirs)."""
        return float(_distance(describe(features), self.center, self.scale)[0])

    def accepts(self, features) -> bool:
        return self.distance(features) <= self.threshold

    def check(self, features) -> tuple[float, bool]:
        """(distance, accepted) for the embedding a decode runs on; computed once per
        embedding object (the predictor hands the same one to every click on an image)."""
        if self._last is None or self._last[0] is not features:
            self._last = (features, self.distance(features))
        distance = self._last[1]
        return distance, distance <= self.threshold

    def summary(self) -> dict:
        return {"images": self.images, "threshold": round(self.threshold, 3),
                "features": int(len(self.center))}

    # ---- files ------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write `domain_gate.safetensors` into an adapter folder (no pickle)."""
        from safetensors.numpy import save_file

        path = Path(folder) / GATE_FILE
        save_file({"center": self.center.astype(np.float32),
                   "scale": self.scale.astype(np.float32)}, str(path),
                  metadata={"threshold": repr(self.threshold), "images": str(self.images),
                            "format": "napari-medsam-domain-gate-2"})
        return path

    @classmethod
    def load(cls, folder: str | Path) -> DomainGate | None:
        """The gate of an adapter folder, or None when it has none (or it is unreadable)."""
        path = Path(folder) / GATE_FILE
        if not path.is_file():
            return None
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="numpy") as f:
                meta = f.metadata() or {}
                center, scale = f.get_tensor("center"), f.get_tensor("scale")
            if meta.get("format") != "napari-medsam-domain-gate-2":
                raise ValueError(f"unknown format {meta.get('format')}")
            return cls(center.astype(np.float64), scale.astype(np.float64),
                       float(meta["threshold"]), int(meta.get("images", 0)))
        except Exception as exc:  # safetensors raises its own error type
            log.warning("The domain gate %s could not be read (%s): the adapter will be used on "
                        "every image. Train the adapter again to restore it.", path, exc)
            return None
