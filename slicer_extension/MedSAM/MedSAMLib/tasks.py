"""The Logic's heavy steps on numpy stacks and the core Session: no MRML, no Qt.

Each function here may run in a background thread (see jobs.py): it reads the Session's image
and writes only numpy results; MRML nodes are updated afterwards on the main thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from . import features

ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], bool]


def embed_slices(session, order: list[int]) -> Iterator[tuple[int, int]]:
    """Encode the slices in `order` into the predictor's cache; yields (done, total).

    The predictor's current image is left alone (so a click in the main thread is never
    answered on the wrong slice); slices already cached cost nothing. (`Session.embedding`.)
    """
    for done, total, _, _ in session.embedding(order):
        yield done, total


@dataclass
class PropagationOutcome:
    """Masks of the slices propagation segmented (stack layout), and what it reported."""

    stack: np.ndarray
    slices: list[int] = field(default_factory=list)
    scores: dict[int, float] = field(default_factory=dict)
    stopped: dict[str, str] = field(default_factory=dict)
    cancelled: bool = False
    summary: str = ""


def propagate(session, stack: np.ndarray, start: int, mode: str = "volume",
              direction: str = "both", progress: ProgressFn | None = None,
              cancel: CancelFn | None = None) -> PropagationOutcome:
    """Propagate the object on slice `start` of `stack` (slices, rows, columns) outward.

    Slices that already hold the object are anchors: kept and used as the previous mask.
    Returns only the new slices (their masks in `stack` layout); a cancel keeps what was done.
    """
    from napari_medsam.core.errors import CancelledError

    prop = features.propagation()
    stack = np.asarray(stack) > 0
    new = np.zeros_like(stack)
    outcome = PropagationOutcome(stack=new)

    def on_mask(z: int, mask: np.ndarray) -> None:
        new[z] = mask

    def anchors(z: int):
        return stack[z] if stack[z].any() else None

    try:
        result = prop.propagate(
            session.predictor, session.embed, session.n_slices, int(start),
            prop.SliceMask(stack[start]), on_mask, settings=mode, direction=direction,
            anchors=anchors, progress=progress, cancel=cancel,
        )
    except CancelledError as exc:
        result = getattr(exc, "result", None)
        outcome.cancelled = True
    if result is not None:
        outcome.slices, outcome.scores = list(result.slices), dict(result.scores)
        outcome.stopped, outcome.summary = dict(result.stopped), result.summary()
    return outcome


def load_head(head: str, predictor):
    """An automatic-segmentation head by name or folder, checked against the model."""
    return features.autoseg().load_head(head, predictor)


@dataclass
class AutoOutcome:
    """Label stack from an automatic head, and the structure values and names it writes."""

    labels: np.ndarray
    values: list[int]
    names: list[str]
    slices: list[int] = field(default_factory=list)
    cancelled: bool = False


def auto_segment(session, head, slices: list[int], progress: ProgressFn | None = None,
                 cancel: CancelFn | None = None) -> AutoOutcome:
    """Run `head` on each slice; a cancel keeps the slices already done. All the slices of the
    volume: segmented as a volume (each structure made consistent across slices, the core's
    `autoseg.segment_volume`, as `napari-medsam auto` and napari's "Segment volume" do)."""
    from napari_medsam.core.errors import CancelledError

    auto = features.autoseg()
    image = session.image
    labels = np.zeros(image.shape, dtype=np.uint16)
    outcome = AutoOutcome(labels, list(head.structures), list(head.names))
    if sorted(slices) == list(range(session.n_slices)) and hasattr(auto, "segment_volume"):
        try:
            outcome.labels = auto.segment_volume(session, head, progress=progress, cancel=cancel)
            outcome.slices = list(range(session.n_slices))
        except CancelledError as exc:
            outcome.labels, outcome.cancelled = exc.labels, True
            outcome.slices = [z for z in range(session.n_slices) if exc.labels[z].any()]
        return outcome
    for i, z in enumerate(slices):
        if cancel is not None and cancel():
            outcome.cancelled = True
            break
        session.embed(z)
        labels[z] = auto.segment_embedding(session.predictor, head).labels
        outcome.slices.append(z)
        if progress is not None:
            progress(i + 1, len(slices))
    return outcome
