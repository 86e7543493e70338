"""Session: what both front ends drive. An image or volume, prompts with undo, commit to labels.

The front ends only translate events (a click, a box, a key) into these verbs and show the
returned numpy masks; every model call, cache and label bookkeeping happens here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from .errors import CancelledError, InputError, NoImageError
from .intensity import Preset, get_preset
from .predictor import Prediction, Predictor, validate_image
from .propagation import PropagationResult, PropagationSettings, SliceMask

ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], bool]


@dataclass
class PromptState:
    """Prompts of the object being drawn, and the mask they gave."""

    points: list[tuple[float, float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    box: tuple[float, float, float, float] | None = None
    logits: np.ndarray | None = None  # low-res logits, fed back on the next click
    mask: np.ndarray | None = None
    score: float = 0.0


class Session:
    """One image or volume being annotated.

    Args:
        predictor: the predictor to use (default LiteMedSAM with a memory cache).
        preset: intensity preset name for the image (CT window, mri, auto...).
    """

    def __init__(self, predictor: Predictor | None = None, preset: str | Preset = "auto"):
        self.predictor = predictor if predictor is not None else Predictor()
        self.preset = get_preset(preset)
        self.image: np.ndarray | None = None
        self.is_volume = False
        self.bounds: tuple[float, float] | None = None
        self.labels: np.ndarray | None = None
        self.current_slice = 0
        self._history: list[PromptState] = [PromptState()]
        self.corrections = None  # a corrections.CorrectionStore: every commit is saved there

    # ---- image -----------------------------------------------------------------------------
    def set_image(
        self, image: np.ndarray, is_volume: bool | None = None, preset: str | Preset | None = None
    ) -> None:
        """Load a 2D image (H, W[, 3]) or a volume / 2D+t sequence (Z, Y, X). Nothing is encoded."""
        image = np.asarray(image)
        if is_volume is None:
            is_volume = image.ndim == 3 and image.shape[-1] not in (3, 4)
        if preset is not None:
            self.preset = get_preset(preset)
        if is_volume:
            if image.ndim != 3 or min(image.shape) < 1 or image.size == 0:
                raise InputError(f"A volume must be (slices, rows, columns), got {image.shape}.")
            validate_image(image[0])
            if image.dtype.kind == "f" and not np.isfinite(image).all():
                raise InputError(
                    "The volume has NaN or infinite voxels. Fill them before segmenting."
                )
            self.bounds = self.preset.bounds(image)
        else:
            image = validate_image(image)
            self.bounds = None
        self.image, self.is_volume = image, bool(is_volume)
        shape = image.shape if is_volume else image.shape[:2]
        self.labels = np.zeros(shape, dtype=np.uint16)
        self.current_slice = image.shape[0] // 2 if is_volume else 0
        self.reset_prompts()

    def _require_image(self) -> np.ndarray:
        if self.image is None:
            raise NoImageError("No image is loaded: open an image or volume first.")
        return self.image

    @property
    def n_slices(self) -> int:
        return self._require_image().shape[0] if self.is_volume else 1

    def slice_image(self, z: int | None = None) -> np.ndarray:
        image = self._require_image()
        if not self.is_volume:
            return image
        z = self.current_slice if z is None else z
        if not 0 <= z < image.shape[0]:
            raise InputError(f"Slice {z} is outside the volume (0 to {image.shape[0] - 1}).")
        return image[z]

    def embed(self, z: int | None = None) -> str:
        """Make slice `z` (or the 2D image) current in the predictor, encoding it if not cached."""
        return self.predictor.set_image(self.slice_image(z), self.preset, self.bounds)

    def is_embedded(self, z: int) -> bool:
        key = self.predictor.image_key(self.slice_image(z), self.preset, self.bounds)
        return key in self.predictor.cache

    def slice_order(self, start: int | None = None) -> list[int]:
        """Slices from `start` outward: start, start+1, start-1, start+2, ..."""
        n = self.n_slices
        start = self.current_slice if start is None else start
        order = [start]
        for step in range(1, n):
            order += [z for z in (start + step, start - step) if 0 <= z < n]
        return order

    def embed_all(
        self,
        slices: Iterable[int] | None = None,
        progress: ProgressFn | None = None,
        cancel: CancelFn | None = None,
    ) -> int:
        """Embed many slices (default: current slice first, then outward). Returns how many.

        Raises CancelledError when `cancel()` turns true; slices already done stay cached.
        """
        order = list(slices) if slices is not None else self.slice_order()
        for i, z in enumerate(order):
            if cancel is not None and cancel():
                raise CancelledError(f"Embedding cancelled after {i} of {len(order)} slices.")
            self.predictor.set_image(self.slice_image(z), self.preset, self.bounds)
            if progress is not None:
                progress(i + 1, len(order))
        return len(order)

    # ---- prompts ---------------------------------------------------------------------------
    def set_slice(self, z: int) -> None:
        """Move to slice z; prompts of an uncommitted object are dropped."""
        if self.is_volume and z != self.current_slice:
            self.slice_image(z)
            self.current_slice = int(z)
            self.reset_prompts()

    @property
    def state(self) -> PromptState:
        return self._history[-1]

    @property
    def preview(self) -> np.ndarray | None:
        """The current (uncommitted) mask of the slice, or None."""
        return self.state.mask

    def add_point(self, x: float, y: float, positive: bool = True) -> np.ndarray:
        """Add a click and return the new preview mask."""
        s = self.state
        points = s.points + [(float(x), float(y))]
        new = PromptState(points, s.labels + [int(bool(positive))], s.box)
        return self._run(new, feed_back=s.logits)

    def set_box(self, box) -> np.ndarray:
        """Set (replace) the box of the current object and return the preview mask."""
        box = tuple(float(v) for v in np.asarray(box, dtype=float).reshape(4))
        s = self.state
        return self._run(PromptState(list(s.points), list(s.labels), box), feed_back=None)

    def _run(self, new: PromptState, feed_back: np.ndarray | None) -> np.ndarray:
        self.embed()
        pred = self.predict_state(new, feed_back)
        new.logits, new.mask = pred.low_res_logits[0], pred.masks[0]
        new.score = float(pred.scores[0])
        self._history.append(new)
        return new.mask

    def predict_state(self, st: PromptState, feed_back: np.ndarray | None = None) -> Prediction:
        """Decode a prompt state on the current embedding."""
        pts = np.asarray(st.points, dtype=float) if st.points else None
        labels = np.asarray(st.labels) if st.points else None
        mask_in = feed_back if (feed_back is not None and st.points) else None
        return self.predictor.predict(points=pts, labels=labels, box=st.box, mask_input=mask_in)

    def undo(self) -> np.ndarray | None:
        """Drop the last prompt; returns the previous preview (None when no prompt is left)."""
        if len(self._history) > 1:
            self._history.pop()
        return self.state.mask

    def reset_prompts(self) -> None:
        """Forget the prompts and preview of the current object."""
        self._history = [PromptState()]

    # ---- labels ----------------------------------------------------------------------------
    def next_label(self) -> int:
        labels = self.labels if self.labels is not None else np.zeros(1, np.uint16)
        return int(labels.max()) + 1

    def commit(self, label: int | None = None, mask: np.ndarray | None = None) -> int:
        """Write the preview (or `mask`) into the labels with a new id; never overwrites objects.

        Returns:
            The label id used. Raises InputError when there is nothing to commit.
        """
        self._require_image()
        mask = self.preview if mask is None else np.asarray(mask, bool)
        if mask is None or not mask.any():
            raise InputError("Nothing to commit: the current mask is empty. Add a box or a click.")
        label = self.next_label() if label is None else int(label)
        target = self.labels[self.current_slice] if self.is_volume else self.labels
        if mask.shape != target.shape:
            raise InputError(f"Mask {mask.shape} does not fit the slice {target.shape}.")
        target[mask & (target == 0)] = label
        if self.corrections is not None:  # saved at once: never lose an annotation
            from .corrections import record_commit

            record_commit(self.corrections, self, mask, label)
        self.reset_prompts()
        return label

    # ---- automatic segmentation --------------------------------------------------------------
    def auto(self, head, mode=None, z: int | None = None, commit: bool = False) -> np.ndarray:
        """Segment every structure of the current slice (or 2D image) with an automatic head.

        Args:
            head: a loaded `autoseg.AutoHead`, a shipped head name (e.g. "camus-patch") or the
                path of a head folder.
            mode: "dense", "box" or "refine" (default: the mode the head validated best with).
            z: the slice to segment (volumes; default the current slice).
            commit: also write each structure into `labels` under its own value; existing
                objects are never overwritten.

        Returns:
            uint16 (H, W) label map with the head's structure values (e.g. 1 LV, 2 myocardium,
            3 LA): a starting point the user corrects with clicks.
        """
        from .autoseg import load_head, segment_embedding

        if not hasattr(head, "module"):  # a name or a folder
            head = load_head(head, self.predictor.model)
        z = self.current_slice if z is None else int(z)
        self.embed(z)
        result = segment_embedding(self.predictor, head, mode).labels
        if commit:
            target = self.labels[z] if self.is_volume else self.labels
            for value in np.unique(result)[1:]:
                target[(result == value) & (target == 0)] = value
        return result

    # ---- volumes: propagation and interpolation ----------------------------------------------
    def _object_label(self, label: int | None, z: int) -> int:
        """The label to propagate from slice z: as given, or the only one there."""
        present = [int(v) for v in np.unique(self.labels[z]) if v != 0]
        if label is None:
            if len(present) != 1:
                where = "no object" if not present else f"objects {present}"
                raise InputError(f"Slice {z} holds {where}: say which label to propagate.")
            return present[0]
        if int(label) not in present:
            raise InputError(f"Label {label} is not on slice {z}: segment or commit it there.")
        return int(label)

    def _write_slice(self, label: int, overwrite: bool) -> Callable[[int, np.ndarray], None]:
        def write(z: int, mask: np.ndarray) -> None:
            target = self.labels[z]
            if overwrite:
                target[target == label] = 0
            target[mask & (target == 0)] = label

        return write

    def propagate(
        self,
        label: int | None = None,
        z: int | None = None,
        direction: str = "both",
        settings: str | PropagationSettings = "volume",
        overwrite: bool = False,
        progress: ProgressFn | None = None,
        cancel: CancelFn | None = None,
    ) -> PropagationResult:
        """Segment one object on the neighbouring slices (or frames) of slice `z`, one by one.

        The object is the uncommitted preview of the current slice (committed first, as `label`
        or a new label) or, without a preview, the committed object `label` on slice `z`.
        Results go straight into `labels`, only over background: other objects are never
        touched, and slices that already hold this label are kept and followed (unless
        `overwrite`). Use settings="time" for a 2D+t sequence.

        Returns:
            A PropagationResult (label, slices done, why each direction stopped).
        Raises:
            InputError for a 2D image, a slice outside the volume or no object to start from;
            CancelledError (with `.result`) when `cancel()` turns true: finished slices stay.
        """
        from .propagation import propagate

        self._require_volume()
        z = self.current_slice if z is None else int(z)
        self.slice_image(z)
        logits = None
        if z == self.current_slice and self.preview is not None and self.preview.any():
            logits = self.state.logits
            label = self.commit(label=label)
        label = self._object_label(label, z)
        start = SliceMask(self.labels[z] == label, logits)
        result = propagate(
            self.predictor, self.embed, self.n_slices, z, start,
            on_mask=self._write_slice(label, overwrite), settings=settings, direction=direction,
            anchors=None if overwrite else (lambda k: self.labels[k] == label),
            progress=progress, cancel=cancel,
        )
        result.label = label
        return result

    def interpolate(
        self,
        label: int | None = None,
        z0: int | None = None,
        z1: int | None = None,
        refine: bool = True,
        progress: ProgressFn | None = None,
        cancel: CancelFn | None = None,
    ) -> PropagationResult:
        """Fill the slices between annotated slices of one object (only where it is missing).

        With z0 and z1, fill between those two slices; otherwise fill every gap between the
        slices that hold `label`. With `refine`, the model re-segments each blended shape.
        """
        from .propagation import interpolate

        labels = self._require_volume()
        if label is None:
            present = [int(v) for v in np.unique(labels) if v != 0]
            if len(present) != 1:
                raise InputError("Say which label to interpolate (the volume holds "
                                 f"{len(present)} objects).")
            label = present[0]
        has = (labels == label).any(axis=(1, 2))
        if z0 is not None or z1 is not None:
            if z0 is None or z1 is None:
                raise InputError("Give both slices to interpolate between (z0 and z1).")
            pairs = [tuple(sorted((self._object_slice(label, z0), self._object_slice(label, z1))))]
        else:
            zs = np.nonzero(has)[0]
            pairs = [(int(a), int(b)) for a, b in zip(zs[:-1], zs[1:], strict=True) if b - a > 1]
            if len(zs) < 2:
                raise InputError(f"Label {label} is on {len(zs)} slice(s): annotate two slices.")
        total = PropagationResult(start=pairs[0][0] if pairs else 0, label=int(label))
        for a, b in pairs:
            res = interpolate(
                self.predictor, self.embed, a, labels[a] == label, b, labels[b] == label,
                on_mask=self._write_slice(int(label), False), refine=refine,
                skip=lambda k: bool((labels[k] == label).any()), progress=progress, cancel=cancel,
            )
            total.slices += res.slices
            total.scores.update(res.scores)
            total.stopped[f"{a}-{b}"] = res.stopped["between"]
            total.seconds += res.seconds
        return total

    def _object_slice(self, label: int, z: int) -> int:
        self.slice_image(z)
        if not (self.labels[z] == label).any():
            raise InputError(f"Label {label} is not on slice {z}: annotate it there first.")
        return int(z)

    def _require_volume(self) -> np.ndarray:
        self._require_image()
        if not self.is_volume:
            raise InputError("Propagation needs a volume or a 2D+t sequence, not a 2D image.")
        return self.labels

    def prefetch(
        self,
        radius: int | None = None,
        progress: ProgressFn | None = None,
        cancel: CancelFn | None = None,
    ) -> int:
        """Embed slices around the current one, nearest first, without changing the current
        embedding (safe from a background thread while the user clicks). Returns how many
        were computed; cached slices are skipped. Cancelling just stops early.
        """
        self._require_volume()
        order = self.slice_order()
        if radius is not None:
            order = [z for z in order if abs(z - self.current_slice) <= radius]
        computed = 0
        for i, z in enumerate(order):
            if cancel is not None and cancel():
                break
            image = self.slice_image(z)
            key = self.predictor.image_key(image, self.preset, self.bounds)
            if key not in self.predictor.cache:
                entry = self.predictor.compute_embedding(image, self.preset, self.bounds)
                self.predictor.cache.put(key, entry)
                computed += 1
            if progress is not None:
                progress(i + 1, len(order))
        return computed
