"""Propagation's stop rules on hand-made slices: each rule names itself, and a mask that keeps
its shape, score and stability goes on (the accuracy of the rules is in test_propagation.py)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medsam.core.propagation import (
    PRESETS,
    Intensity,
    PropagationSettings,
    SliceMask,
    stop_reason,
)


def _disc(radius: float, size: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (yy - size / 2) ** 2 + (xx - size / 2) ** 2 <= radius ** 2


def _slice(mask: np.ndarray, score: float = 0.9, sharp: float = 8.0) -> SliceMask:
    """Logits of +-`sharp` inside/outside: a confident, stable mask (low `sharp`: unstable)."""
    return SliceMask(mask, np.where(mask, sharp, -sharp).astype(np.float32), score)


def test_stability_is_sams_ratio():
    logits = np.array([[3.0, 0.5, -0.5, -3.0]], np.float32)
    assert SliceMask(logits > 0, logits).stability == pytest.approx(1 / 3)
    assert _slice(_disc(10)).stability == 1.0
    assert SliceMask(_disc(10)).stability == 1.0  # no logits (an anchor): nothing to doubt


def test_a_steady_object_goes_on():
    prev = _slice(_disc(12))
    assert stop_reason(_slice(_disc(11)), prev, int(prev.mask.sum()), PRESETS["volume"]) == ""


@pytest.mark.parametrize("new, settings, why", [
    (_slice(_disc(0.4)), PRESETS["volume"], "vanished"),
    (_slice(_disc(11), score=0.6), PRESETS["volume"], "score"),
    (_slice(_disc(11), sharp=0.5), PropagationSettings(min_stability=0.5), "unsure"),
    (_slice(_disc(24)), PRESETS["volume"], "grew"),
    (_slice(np.roll(_disc(12), 30, axis=1)), PRESETS["volume"], "overlap"),
])
def test_each_rule_says_why(new, settings, why):
    prev = _slice(_disc(12))
    assert why in stop_reason(new, prev, int(prev.mask.sum()), settings)


def test_time_preset_keeps_its_loose_rules():
    """A heart chamber between frames: a score of 0.6 and a brighter blood pool go on."""
    prev = _slice(_disc(12))
    assert stop_reason(_slice(_disc(11), score=0.6), prev, int(prev.mask.sum()),
                       PRESETS["time"]) == ""


def test_overlap_limit_and_intensity_drift():
    prev = _slice(_disc(12))
    moved = _slice(np.roll(_disc(12), 8, axis=1))  # Dice ~0.6: only a strict limit stops
    strict = PropagationSettings(min_overlap=0.7)
    assert "overlap" in stop_reason(moved, prev, int(prev.mask.sum()), strict)
    assert stop_reason(moved, prev, int(prev.mask.sum()), PRESETS["volume"]) == ""
    image = np.where(_disc(12), 100.0, 0.0)
    image[_disc(11)] += np.linspace(0, 4, int(_disc(11).sum()))
    reference = Intensity.of(image, prev.mask)
    other = image.copy()
    other[_disc(11)] = 300.0  # the mask now covers much brighter tissue
    drift = PropagationSettings(max_shift=4.0)
    assert "intensity" in stop_reason(_slice(_disc(11)), prev, int(prev.mask.sum()), drift,
                                      reference, other)
    assert stop_reason(_slice(_disc(11)), prev, int(prev.mask.sum()), drift, reference,
                       image) == ""
