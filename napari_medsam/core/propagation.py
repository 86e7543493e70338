"""Slice-to-slice propagation through a volume or a 2D+t sequence, and interpolation.

From one segmented slice, the neighbours are segmented one after another, up and down (or
forwards and backwards in time): the previous slice's mask gives the box prompt of the next slice
(LiteMedSAM was trained on boxes), optionally with the previous logits as a mask prompt and its
deepest interior point as a click. A direction stops when the object ends: the mask vanishes, the
decoder's score drops, the overlap with the previous slice drops or the mask suddenly balloons.

The functions here know nothing of labels or front ends: `embed(z)` makes slice z current in the
predictor and `on_mask(z, mask)` stores a result (the Session writes it into its label volume), so
whatever finished before a cancel is already stored.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from . import regions
from .clicks import interior_point
from .errors import CancelledError, InputError
from .metrics import bbox, dice
from .predictor import Predictor

EmbedFn = Callable[[int], object]
MaskFn = Callable[[int, np.ndarray], None]
AnchorFn = Callable[[int], "np.ndarray | None"]
ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], bool]


@dataclass(frozen=True)
class PropagationSettings:
    """How the next slice is prompted and when a direction stops.

    margin: pixels added around the previous mask's box.
    use_mask: also feed the previous slice's low-res logits as a mask prompt.
    use_point: also click the previous mask's deepest interior point (positive).
    min_area: stop when the mask has fewer pixels than this fraction of the start mask.
    min_score: stop when the decoder's predicted IoU falls below this.
    min_stability: stop when the mask's stability (`SliceMask.stability`) falls below this.
    min_overlap: stop when Dice with the previous slice's mask falls below this.
    small_area / small_overlap: for a previous mask under `small_area` pixels (a small lesion,
        a few hundred voxels per slice) the overlap limit is `small_overlap` instead: a small
        object shifts by a good part of its size from slice to slice.
    max_growth: stop when the mask gets this many times larger than the previous one.
    max_shift: stop when the mean intensity inside the mask moves more than this many standard
        deviations (of the object on the start slice) away from the start slice's mean: past an
        organ's or a lesion's end the box still finds something, but it is other tissue
        (None: no intensity rule).
    zoom: let the predictor decode small objects on a zoom window (`core.zoom`); off: on the
        training patients' stacks and the dev volumes the whole-slice decode tracks better.
    max_slices: at most this many slices per direction (None: to the end).
    """

    margin: int = 3
    use_mask: bool = False
    use_point: bool = False
    min_area: float = 0.02
    min_score: float = 0.65
    min_stability: float = 0.0
    min_overlap: float = 0.3
    small_area: int = 0
    small_overlap: float = 0.6
    max_growth: float = 3.0
    max_shift: float | None = 3.0
    zoom: bool = False
    max_slices: int | None = None


# Fitted on the training patients' MRI stacks (issue 22, benchmarks/tune_propagation.py: every
# object's run recorded without stopping, thresholds searched on the records), reported on the dev
# volumes (docs/performance.md). Past an object's end the box still finds something; what tells
# is a lower decoder score (0.65, not 0.5) and the intensity inside the mask drifting 3 standard
# deviations from the start slice's. The overlap with the previous slice is no stop signal at
# 0.6 (a right ventricle's shape changes fastest towards the base while the mask is still right):
# it stays only as a floor against a jump to another object. The mask's stability and the click
# decoder's agreement were recorded and searched too, and did not help. A plain box with a 3-pixel
# margin, no mask prompt, no click and no zoom window tracks best (measured on the dev volumes).
PRESETS: dict[str, PropagationSettings] = {
    "volume": PropagationSettings(),
    # a heart chamber does not end between frames: only stop on a clear tracking failure
    "time": PropagationSettings(min_score=0.5, min_overlap=0.3, max_growth=3.0, max_shift=None),
}


def get_settings(settings: str | PropagationSettings | None) -> PropagationSettings:
    """A settings object from a preset name ("volume", "time") or as given."""
    if settings is None:
        return PRESETS["volume"]
    if isinstance(settings, PropagationSettings):
        return settings
    if settings not in PRESETS:
        raise InputError(f"Unknown propagation mode '{settings}'. Choose: {', '.join(PRESETS)}.")
    return PRESETS[settings]


@dataclass
class SliceMask:
    """One slice's result: the mask, the decoder's low-res logits (or None) and its score."""

    mask: np.ndarray
    logits: np.ndarray | None = None
    score: float = 1.0
    window: tuple[int, int, int, int] | None = None  # the frame of `logits` (core.zoom)

    @property
    def stability(self) -> float:
        """How little the mask moves when the logit threshold moves by +-1 (SAM's stability
        score: |logits > 1| / |logits > -1|): a mask the decoder is unsure of spreads or shrinks."""
        if self.logits is None:
            return 1.0
        loose = int((self.logits > -1.0).sum())
        return float((self.logits > 1.0).sum()) / loose if loose else 0.0


@dataclass
class PropagationResult:
    """What a propagation or interpolation did.

    slices: slices written, in the order they were done; scores: decoder score per slice;
    stopped: why each direction ended ("up"/"down" -> reason); cancelled: the user stopped it
    (everything in `slices` is kept).
    """

    start: int
    label: int = 0
    slices: list[int] = field(default_factory=list)
    scores: dict[int, float] = field(default_factory=dict)
    stopped: dict[str, str] = field(default_factory=dict)
    cancelled: bool = False
    seconds: float = 0.0

    @property
    def extent(self) -> tuple[int, int]:
        """(first, last) slice holding the object after the run (start slice included)."""
        zs = [self.start, *self.slices]
        return min(zs), max(zs)

    def summary(self) -> str:
        lo, hi = self.extent
        per = self.seconds / max(len(self.slices), 1)
        stops = "; ".join(f"{k}: {v}" for k, v in self.stopped.items())
        return (f"{len(self.slices)} slice(s) segmented, object now on slices {lo}-{hi} "
                f"({per:.2f} s per slice). {stops}")


def segment_from(predictor: Predictor, prev: SliceMask, settings: PropagationSettings) -> SliceMask:
    """Segment the predictor's current slice prompted by the previous slice's mask."""
    box = bbox(prev.mask, settings.margin)
    if box is None:
        raise InputError("The previous slice's mask is empty: nothing to propagate from.")
    h, w = prev.mask.shape
    box[[0, 1]] = np.minimum(box[[0, 1]], [w - 3, h - 3]).clip(0)  # at least a 2-pixel box
    box[[2, 3]] = np.maximum(box[[2, 3]], box[[0, 1]] + 2)
    points = labels = mask_in = None
    if settings.use_point:
        y, x = interior_point(prev.mask)  # the deepest pixel: a safe positive click
        points, labels = np.array([[float(x), float(y)]]), np.array([1])
    if settings.use_mask and prev.logits is not None:
        mask_in = prev.logits
    pred = predictor.predict(points=points, labels=labels, box=box, mask_input=mask_in,
                             window=prev.window if mask_in is not None else None,
                             zoom=None if settings.zoom else False)
    return SliceMask(pred.masks[0], pred.low_res_logits[0], float(pred.scores[0]), pred.window)


@dataclass(frozen=True)
class Intensity:
    """Mean and spread of an object's pixels on one slice (gray: colour channels averaged)."""

    mean: float
    std: float

    @classmethod
    def of(cls, image: np.ndarray | None, mask: np.ndarray) -> Intensity | None:
        if image is None or not mask.any():
            return None
        gray = np.asarray(image, np.float64)
        gray = gray.mean(axis=-1) if gray.ndim == 3 else gray
        values = gray[np.asarray(mask, bool)]
        return cls(float(values.mean()), float(values.std()))

    def shift(self, other: Intensity, floor: float) -> float:
        """How far `other`'s mean lies from this mean, in this object's standard deviations
        (at least `floor`: a flat object does not make every change look huge)."""
        return abs(other.mean - self.mean) / max(self.std, floor, 1e-6)


@dataclass(frozen=True)
class Signals:
    """What the stop rules read on a new slice: numbers only, so that a recorded run can be
    replayed under other thresholds (benchmarks/tune_propagation.py).

    drift: how far the mean intensity inside the mask moved from the start slice's, in the start
    object's standard deviations (None: not measured).
    """

    area: int
    prev_area: int
    score: float
    stability: float
    overlap: float
    drift: float | None = None

    @classmethod
    def of(cls, new: SliceMask, prev: SliceMask, reference: Intensity | None = None,
           image: np.ndarray | None = None) -> Signals:
        """The signals of `new` after `prev`; the drift only with a `reference` and an image."""
        drift = None
        now = Intensity.of(image, new.mask) if reference is not None else None
        if now is not None:
            floor = 0.02 * float(np.ptp(np.asarray(image, np.float64)))
            drift = reference.shift(now, floor)
        return cls(int(new.mask.sum()), int(prev.mask.sum()), new.score, new.stability,
                   dice(new.mask, prev.mask), drift)


def decide(sig: Signals, start_area: int, s: PropagationSettings) -> str:
    """Why the object is taken to have ended, from a slice's signals ("" when it goes on)."""
    area, prev_area = sig.area, sig.prev_area
    if area < max(1.0, s.min_area * start_area):
        return f"object ended (mask vanished: {area} px)"
    if sig.score < s.min_score:
        return f"object ended (score {sig.score:.2f} < {s.min_score:.2f})"
    if sig.stability < s.min_stability:
        return (f"object ended (unsure mask: stability {sig.stability:.2f} < "
                f"{s.min_stability:.2f})")
    limit = s.small_overlap if prev_area < s.small_area else s.min_overlap
    if sig.overlap < limit:
        return f"object ended (overlap with previous slice {sig.overlap:.2f} < {limit:.2f})"
    if area > s.max_growth * max(prev_area, 1):
        return f"stopped: mask grew {area / max(prev_area, 1):.1f}x (leak into a neighbour?)"
    if s.max_shift is not None and sig.drift is not None and sig.drift > s.max_shift:
        return (f"object ended (intensity moved {sig.drift:.1f} standard deviations from the "
                f"start slice's)")
    return ""


def stop_reason(new: SliceMask, prev: SliceMask, start_area: int, s: PropagationSettings,
                reference: Intensity | None = None, image: np.ndarray | None = None) -> str:
    """Why the object is taken to have ended on this slice ("" when it goes on)."""
    if s.max_shift is None:
        reference = None  # no intensity rule: nothing to measure
    return decide(Signals.of(new, prev, reference, image), start_area, s)


def propagate(
    predictor: Predictor,
    embed: EmbedFn,
    n_slices: int,
    start: int,
    start_mask: SliceMask,
    on_mask: MaskFn,
    settings: str | PropagationSettings | None = None,
    direction: str = "both",
    anchors: AnchorFn | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> PropagationResult:
    """Propagate `start_mask` from slice `start` to its neighbours, alternating up and down.

    Args:
        embed: makes slice z current in `predictor` (encoding it if not cached).
        on_mask: called with (z, mask) for every slice segmented, as soon as it is done.
        direction: "both", "up" (increasing z) or "down".
        anchors: returns an existing mask of the object on slice z (kept as is and used as the
            previous mask for the next slice) or None.
        progress: progress(done, total); total is the most slices still reachable.
        cancel: polled before every slice; when true, CancelledError is raised with `.result`
            (slices done so far are already stored through `on_mask`).
    """
    s = get_settings(settings)
    if direction not in ("both", "up", "down"):
        raise InputError(f"Direction must be 'both', 'up' or 'down', not '{direction}'.")
    if not 0 <= start < n_slices:
        raise InputError(f"Slice {start} is outside the volume (0 to {n_slices - 1}).")
    if not np.asarray(start_mask.mask).any():
        raise InputError(f"The object is empty on slice {start}: segment it there first.")
    t0 = time.perf_counter()
    result = PropagationResult(start=start)
    start_area = int(start_mask.mask.sum())
    fronts = {d: start_mask for d in ("up", "down") if direction in ("both", d)}
    steps = {"up": 1, "down": -1}
    limit = s.max_slices if s.max_slices is not None else n_slices
    done = {d: 0 for d in fronts}

    reference = None
    if s.max_shift is not None:
        embed(start)
        reference = Intensity.of(predictor.image, np.asarray(start_mask.mask, bool))
    total = _left(fronts, done, start, n_slices, limit)
    while fronts:
        for d in list(fronts):
            z = start + steps[d] * (done[d] + 1)
            if not 0 <= z < n_slices:
                result.stopped[d] = "end of volume"
            elif done[d] >= limit:
                result.stopped[d] = f"reached the limit of {limit} slices"
            if d in result.stopped:
                fronts.pop(d)
                continue
            if cancel is not None and cancel():
                result.cancelled = True
                result.seconds = time.perf_counter() - t0
                for left in fronts:
                    result.stopped[left] = "cancelled"
                exc = CancelledError(
                    f"Propagation cancelled: {len(result.slices)} slice(s) were segmented and kept."
                )
                exc.result = result
                raise exc
            existing = anchors(z) if anchors is not None else None
            if existing is not None and np.asarray(existing).any():
                fronts[d] = SliceMask(np.asarray(existing, bool))
                done[d] += 1
                continue
            embed(z)
            new = segment_from(predictor, fronts[d], s)
            reason = stop_reason(new, fronts[d], start_area, s, reference, predictor.image)
            if reason:
                result.stopped[d] = reason
                fronts.pop(d)
                total = len(result.slices) + _left(fronts, done, start, n_slices, limit)
                continue
            on_mask(z, new.mask)
            result.slices.append(z)
            result.scores[z] = new.score
            fronts[d] = new
            done[d] += 1
            if progress is not None:
                progress(len(result.slices), max(total, len(result.slices)))
    result.seconds = time.perf_counter() - t0
    if progress is not None and result.slices:
        progress(len(result.slices), len(result.slices))  # done: the bar ends full
    return result


def _left(fronts: dict, done: dict, start: int, n: int, limit: int) -> int:
    """Slices the live fronts could still reach."""
    left = 0
    for d in fronts:
        end = n - 1 - start if d == "up" else start
        left += max(min(end, limit) - done[d], 0)
    return left


def signed_distance(mask: np.ndarray) -> np.ndarray:
    """Negative inside, positive outside, zero-crossing half a pixel off the border."""
    mask = np.asarray(mask, bool)
    inside = regions.depth(mask)
    outside = regions.depth(~mask)
    return outside - inside


def interpolate_shape(mask0: np.ndarray, mask1: np.ndarray, t: float) -> np.ndarray:
    """Shape between two masks at fraction t (0 -> mask0, 1 -> mask1), by signed distances."""
    sdf = (1.0 - t) * signed_distance(mask0) + t * signed_distance(mask1)
    return sdf < 0


def interpolate(
    predictor: Predictor,
    embed: EmbedFn,
    z0: int,
    mask0: np.ndarray,
    z1: int,
    mask1: np.ndarray,
    on_mask: MaskFn,
    refine: bool = True,
    margin: int = 3,
    min_agreement: float = 0.5,
    skip: Callable[[int], bool] | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> PropagationResult:
    """Fill the slices between two annotated slices z0 < z1.

    Each in-between shape is blended from the two masks' signed distances; with `refine`, the
    model re-segments the slice from that shape's box, and its mask is kept when it agrees with
    the blended shape (Dice >= min_agreement), otherwise the blended shape is kept.

    Args:
        skip: returns True for slices to leave alone (e.g. already annotated).
    """
    if z1 < z0:
        z0, z1, mask0, mask1 = z1, z0, mask1, mask0
    mask0, mask1 = np.asarray(mask0, bool), np.asarray(mask1, bool)
    if not mask0.any() or not mask1.any():
        raise InputError("Both slices must hold the object to interpolate between them.")
    t_start = time.perf_counter()
    result = PropagationResult(start=z0)
    todo = [z for z in range(z0 + 1, z1) if skip is None or not skip(z)]
    sd0, sd1 = signed_distance(mask0), signed_distance(mask1)
    for i, z in enumerate(todo):
        if cancel is not None and cancel():
            result.cancelled, result.stopped["between"] = True, "cancelled"
            result.seconds = time.perf_counter() - t_start
            exc = CancelledError(
                f"Interpolation cancelled: {len(result.slices)} slice(s) were filled and kept."
            )
            exc.result = result
            raise exc
        t = (z - z0) / (z1 - z0)
        shape = ((1.0 - t) * sd0 + t * sd1) < 0
        if not shape.any():
            continue
        mask, score = shape, 1.0
        if refine:
            embed(z)
            pred = predictor.predict(box=bbox(shape, margin))
            if dice(pred.masks[0], shape) >= min_agreement:
                mask, score = pred.masks[0], float(pred.scores[0])
        on_mask(z, mask)
        result.slices.append(z)
        result.scores[z] = score
        if progress is not None:
            progress(i + 1, len(todo))
    result.stopped["between"] = f"filled slices {z0 + 1}-{z1 - 1}" if todo else "nothing to fill"
    result.seconds = time.perf_counter() - t_start
    return result
