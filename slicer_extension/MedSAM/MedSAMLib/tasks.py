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


def make_predictor(device: str | None = None, profile: str | None = None,
                   adapter: str | None = None):
    """LiteMedSAM predictor with the per-user disk cache of embeddings.

    Args:
        device: torch device ("cpu", "cuda"); default cuda when available.
        profile: execution profile of the core's backends ("torch", or the ONNX Runtime
            profiles accurate, balanced, fast, auto); None means torch.
        adapter: a LoRA adapter folder or registry name to run with (None: base model).
    """
    from napari_medsam.core.embeddings import EmbeddingCache, default_cache_dir
    from napari_medsam.core.predictor import Predictor

    cache = EmbeddingCache(disk_dir=default_cache_dir() / "embeddings")
    try:
        backends = features.backends()
    except features.FeatureMissing:
        backends = None
    if backends is not None:
        backend = backends.make_backend(profile or "torch", device=device, adapter=adapter)
        return Predictor(cache=cache, backend=backend)
    if profile not in (None, "torch"):
        backends = features.backends()  # raises the "needs a newer napari-medsam" message
    from napari_medsam.core.model import default_device, load_model

    predictor = Predictor(load_model("litemedsam", device=device or default_device()), cache)
    if adapter:
        load_adapter(predictor, adapter)
    return predictor


def load_adapter(predictor, path: str | None) -> str:
    """Switch the torch model's LoRA adapter in place (None: the base model). Decoder-only
    adapters keep every cached embedding valid; encoder adapters change the cache key."""
    adapters = features.adapters()
    loaded = adapters.adapters_of(predictor.model)
    if not path:
        loaded.activate(None)
        return "Using the base model."
    name = loaded.load(adapters.find_adapter(path))
    return f"Using adapter '{name}'."


def embed_slices(session, order: list[int]) -> Iterator[tuple[int, int]]:
    """Encode the slices in `order` into the predictor's cache; yields (done, total).

    The predictor's current image is left alone (so a click in the main thread is never
    answered on the wrong slice); slices already cached cost nothing.
    """
    predictor = session.predictor
    total = len(order)
    for i, z in enumerate(order):
        image = session.slice_image(z)
        key = predictor.image_key(image, session.preset, session.bounds)
        if key not in predictor.cache:
            predictor.cache.put(key, predictor.compute_embedding(image, session.preset,
                                                                 session.bounds))
        yield i + 1, total


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
    return features.autoseg().load_head(head, predictor.model)


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
    """Run `head` on each slice; a cancel keeps the slices already done."""
    auto = features.autoseg()
    image = session.image
    labels = np.zeros(image.shape, dtype=np.uint16)
    outcome = AutoOutcome(labels, list(head.structures), list(head.names))
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
