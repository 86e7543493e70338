"""Intensity presets: CT windows in Hounsfield units, MRI percentile clipping, as-is for RGB/US.

A preset turns raw pixels into float32 in [0, 1]; its `key` is part of the embedding cache key, so
the same pixels under another window are embedded again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError

# (level, width) in Hounsfield units
CT_WINDOWS = {
    "ct-soft-tissue": (40.0, 400.0),
    "ct-lung": (-600.0, 1500.0),
    "ct-bone": (400.0, 1800.0),
    "ct-brain": (40.0, 80.0),
    "ct-abdomen": (60.0, 360.0),
}
PRESET_NAMES = ("auto", "as-is", "mri", *CT_WINDOWS, "ct-custom:LEVEL,WIDTH")


@dataclass(frozen=True)
class Preset:
    """How raw intensities map to [0, 1].

    kind: "minmax" (image range), "as-is" (uint8 /255, other types min-max), "window" (level/width),
    "percentile" (clip to [low, high] percentiles of the image or volume).
    """

    name: str
    kind: str
    level: float = 0.0
    width: float = 1.0
    low_pct: float = 0.5
    high_pct: float = 99.5

    @property
    def key(self) -> str:
        if self.kind == "window":
            return f"window:{self.level:g},{self.width:g}"
        if self.kind == "percentile":
            return f"pct:{self.low_pct:g},{self.high_pct:g}"
        return self.kind

    def bounds(self, data: np.ndarray) -> tuple[float, float]:
        """The raw-intensity range mapped to [0, 1]; for a volume, call it once on the volume."""
        if self.kind == "window":
            return self.level - self.width / 2, self.level + self.width / 2
        finite = data[np.isfinite(data)] if data.dtype.kind == "f" else data
        if finite.size == 0:
            raise InputError("The image holds no finite pixel values (all NaN or infinite).")
        if self.kind == "percentile":
            lo, hi = np.percentile(finite, [self.low_pct, self.high_pct])
            return float(lo), float(hi)
        if self.kind == "as-is" and data.dtype == np.uint8:
            return 0.0, 255.0
        return float(finite.min()), float(finite.max())

    def apply(self, data: np.ndarray, bounds: tuple[float, float] | None = None) -> np.ndarray:
        """Map `data` to float32 [0, 1] (NaNs become 0). `bounds` reuses a volume's range."""
        lo, hi = bounds if bounds is not None else self.bounds(data)
        out = (np.asarray(data, dtype=np.float32) - lo) / max(hi - lo, 1e-8)
        np.nan_to_num(out, copy=False, nan=0.0, posinf=1.0, neginf=0.0)
        return np.clip(out, 0.0, 1.0, out=out)


def get_preset(name: str | Preset | None = "auto") -> Preset:
    """Look a preset up by name: auto, as-is, mri, ct-soft-tissue, ..., ct-custom:LEVEL,WIDTH."""
    if isinstance(name, Preset):
        return name
    name = (name or "auto").strip().lower()
    if name == "auto":
        return Preset("auto", "minmax")
    if name in ("as-is", "rgb", "ultrasound", "us"):
        return Preset("as-is", "as-is")
    if name == "mri":
        return Preset("mri", "percentile")
    if name in CT_WINDOWS:
        level, width = CT_WINDOWS[name]
        return Preset(name, "window", level=level, width=width)
    if name.startswith("ct-custom:"):
        try:
            level, width = (float(v) for v in name.split(":", 1)[1].split(","))
        except ValueError as exc:
            raise InputError(f"Custom CT window '{name}' must look like ct-custom:40,400.") from exc
        if width <= 0:
            raise InputError(f"CT window width must be positive, got {width:g}.")
        return Preset(name, "window", level=level, width=width)
    raise InputError(
        f"Unknown intensity preset '{name}'. Choose one of: {', '.join(PRESET_NAMES)}."
    )


def suggest_preset(data: np.ndarray, modality: str = "") -> Preset:
    """A sensible default: CT windows for HU data, percentiles for MRI, min-max otherwise."""
    modality = modality.lower()
    if modality.startswith("mri") or modality == "mr":
        return get_preset("mri")
    if modality.startswith("ct") and data.dtype.kind in "if" and float(np.nanmin(data)) < -200:
        return get_preset("ct-soft-tissue")
    return get_preset("auto")
