"""The volume verbs of `Session`: propagate one object through slices, interpolate between slices.

Kept apart from `session.py` (image, prompts, labels) only to keep files small: `Session` inherits
them, so front ends call `session.propagate(...)` and `session.interpolate(...)`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .errors import InputError
from .propagation import PropagationResult, PropagationSettings, SliceMask

ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], bool]


class VolumeVerbs:
    """Propagation and interpolation over a `Session`'s labels (mixed into `Session`)."""

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

        The object is the one being drawn (its drafts are committed first, as `label` or a new
        label) or, with nothing drawn, the committed object `label` on slice `z`.
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
        logits, window = None, None
        if self.drafts:
            if z == self.current_slice and self.preview is not None:
                logits, window = self.state.logits, self.state.window
            label = self.commit_object(label=label)
        label = self._object_label(label, z)
        start = SliceMask(self.labels[z] == label, logits, window=window)
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
