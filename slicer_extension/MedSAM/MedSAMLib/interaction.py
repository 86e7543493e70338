"""The Segment Editor effect's mouse gestures and per-object bookkeeping, without Qt or VTK.

A press-and-release that barely moves is a click (positive; with Ctrl negative); a drag is a box.
Each prompt re-decodes the object and rewrites its slice as (what the segment had on that slice
before the object was started) | (the object's new mask), so refining an object never eats into
earlier annotations and each prompt is one undo step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DRAG_PIXELS = 5  # a press that moves less than this is a click


@dataclass(frozen=True)
class Gesture:
    """What the user did in a slice view: a click or a box, in view pixel (x, y)."""

    kind: str  # "point" or "box"
    start: tuple[float, float]
    end: tuple[float, float]
    positive: bool = True


class GestureTracker:
    """Turn press / move / release events of one slice view into Gestures."""

    def __init__(self, drag_pixels: float = DRAG_PIXELS):
        self.drag_pixels = drag_pixels
        self.start: tuple[float, float] | None = None
        self.current: tuple[float, float] | None = None
        self.negative = False

    @property
    def active(self) -> bool:
        return self.start is not None

    def press(self, xy, negative: bool = False) -> None:
        self.start = self.current = (float(xy[0]), float(xy[1]))
        self.negative = bool(negative)

    def move(self, xy) -> tuple[float, float, float, float] | None:
        """Update the drag; returns the rubber-band rectangle (x0, y0, x1, y1) while dragging."""
        if self.start is None:
            return None
        self.current = (float(xy[0]), float(xy[1]))
        return (*self.start, *self.current) if self.is_drag() else None

    def is_drag(self) -> bool:
        if self.start is None or self.current is None:
            return False
        dx, dy = self.current[0] - self.start[0], self.current[1] - self.start[1]
        return max(abs(dx), abs(dy)) >= self.drag_pixels

    def release(self, xy) -> Gesture | None:
        """The finished gesture (None when no press was seen)."""
        if self.start is None:
            return None
        self.move(xy)
        start, end = self.start, self.current
        kind = "box" if self.is_drag() else "point"
        gesture = Gesture(kind, start, end if kind == "box" else start, positive=not self.negative)
        self.cancel()
        return gesture

    def cancel(self) -> None:
        self.start = self.current = None
        self.negative = False


@dataclass
class ObjectOnSlice:
    """The object being drawn: where, and what its slice held before it was started."""

    key: tuple  # (volume id, segmentation id, segment id, axis, index)
    base: np.ndarray  # bool slice of the segment before this object

    def slice_content(self, mask: np.ndarray) -> np.ndarray:
        """What the slice holds after the object's latest mask: earlier content kept."""
        return self.base | np.asarray(mask, bool)


def rectangle_points(x0: float, y0: float, x1: float, y1: float) -> list[tuple[float, float]]:
    """Closed outline of a rubber-band rectangle (5 points) in view pixels."""
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
