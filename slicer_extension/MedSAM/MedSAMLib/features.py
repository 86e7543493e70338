"""What the installed napari-medsam core offers, looked up at run time.

The Slicer module installs whatever napari-medsam version pip gives; newer core features
(propagation, automatic heads, adapters, execution profiles) are used when present and reported
in plain words when not, instead of failing at import.
"""

from __future__ import annotations

import importlib

try:
    from napari_medsam.core.errors import MedSAMError
except ImportError:  # napari-medsam not installed yet (first start in Slicer)
    MedSAMError = RuntimeError


class FeatureMissing(MedSAMError):
    """The installed napari-medsam does not have this feature yet."""


def _module(name: str):
    try:
        return importlib.import_module(f"napari_medsam.core.{name}")
    except ImportError:
        return None


def _need(module, attribute: str, what: str):
    value = getattr(module, attribute, None) if module is not None else None
    if value is None:
        raise FeatureMissing(
            f"{what} needs a newer napari-medsam. Update it from the MedSAM module "
            "(Advanced > Update napari-medsam) and restart Slicer."
        )
    return value


def propagation():
    """The core's `propagation` module (propagate, PRESETS, SliceMask)."""
    module = _module("propagation")
    _need(module, "propagate", "Propagation through slices")
    return module


def has(feature: str) -> bool:
    """True when `feature` ("propagation", "auto", "adapters", "profiles") is available."""
    try:
        {"propagation": propagation, "auto": autoseg, "adapters": adapters,
         "profiles": runtime}[feature]()
    except FeatureMissing:
        return False
    return True


def autoseg():
    """The core's `autoseg` package (load_head, segment_embedding...)."""
    module = _module("autoseg")
    _need(module, "segment_embedding", "Automatic segmentation")
    _need(module, "load_head", "Automatic segmentation")
    return module


def adapters():
    """The core's `adapters` module (adapters_of(model).load/activate)."""
    module = _module("adapters")
    _need(module, "adapters_of", "LoRA adapters")
    return module


def runtime():
    """The core's `runtime` module (RuntimeSpec, Runtime: torch or ONNX Runtime profiles)."""
    module = _module("runtime")
    _need(module, "Runtime", "This MedSAM module")
    return module


def profile_names() -> list[str]:
    """ONNX Runtime profiles to offer besides torch (accurate, balanced, fast, auto)."""
    try:
        runtime()
    except FeatureMissing:
        return []
    profiles = _module("profiles")
    return [name for name in getattr(profiles, "CHOICES", ()) if name != "torch"]


def default_profile() -> str | None:
    """"auto" (torch on a GPU, else the most accurate ONNX Runtime profile within the latency
    budget) when the installed core has it, else None (torch)."""
    return "auto" if "auto" in profile_names() else None


def propagation_modes() -> list[str]:
    """Propagation presets of the core (e.g. volume, time)."""
    try:
        return list(propagation().PRESETS)
    except FeatureMissing:
        return []
