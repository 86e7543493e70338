"""Session: what both front ends drive. An image or volume, prompts with undo, commit to labels.

The front ends only translate events (a click, a box, a key) into these verbs and show the
returned numpy masks; every model call, cache and label bookkeeping happens here. The object being
drawn may span several slices of a volume: its mask per slice (`drafts`) is held here, the one
place the front ends read the preview from, and `commit_object` writes them with one id.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from . import checks
from .errors import CancelledError, InputError, NoImageError
from .intensity import Preset, get_preset
from .predictor import Prediction, Predictor, validate_image
from .session_volume import VolumeVerbs

ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], bool]


@dataclass
class PromptState:
    """Prompts of the object being drawn, and the mask they gave."""

    points: list[tuple[float, float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    box: tuple[float, float, float, float] | None = None
    logits: np.ndarray | None = None  # low-res logits, fed back on the next click
    window: tuple[int, int, int, int] | None = None  # their frame: a zoom window, or None
    mask: np.ndarray | None = None
    score: float = 0.0
    note: str = ""  # why the mask is empty without asking the model (see Prediction.note)
    pending: tuple[int, int, int, int] | None = None  # a zoom window still to encode (defer_zoom)
    fed: bool = False  # the previous state's logits were the mask prompt


class Session(VolumeVerbs):
    """One image or volume being annotated.

    Args:
        predictor: the predictor to use (default LiteMedSAM with a memory cache).
        preset: intensity preset name for the image (CT window, mri, auto...).

    Attributes:
        labels: uint16 label map (volume: slices, rows, columns); a front end may bind its own
            array with `use_labels` (napari binds the Labels layer's data).
        drafts: slice -> mask of the object being drawn (not yet committed).
        corrections: a `corrections.CorrectionStore`; when set, every commit is saved there,
            with `source` (the file the image came from) and `modality`.
        defer_zoom: a prompt never waits for a zoom window's encoder run: its mask is decoded
            without the window, the window is left in `state.pending` for the front end to
            encode in the background (`predictor.window_job`), and `refine` then decodes again.
    """

    def __init__(self, predictor: Predictor | None = None, preset: str | Preset = "auto"):
        self.predictor = predictor if predictor is not None else Predictor()
        self.preset = get_preset(preset)
        self.image: np.ndarray | None = None
        self.is_volume = False
        self.bounds: tuple[float, float] | None = None
        self.labels: np.ndarray | None = None
        self.current_slice = 0
        self.drafts: dict[int, np.ndarray] = {}
        self._history: list[PromptState] = [PromptState()]
        self.corrections = None
        self.source: str | None = None
        self.modality = ""
        self.auto_ids: dict[tuple[str, int], int] = {}  # (head, structure) -> label id used
        self.defer_zoom = False

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
            checks.volume_pixels(image)
            validate_image(image[0])
            self.bounds = self.preset.bounds(image)
        else:
            image = validate_image(image)
            self.bounds = None
        self.image, self.is_volume = image, bool(is_volume)
        shape = image.shape if is_volume else image.shape[:2]
        self.labels = np.zeros(shape, dtype=np.uint16)
        self.current_slice = image.shape[0] // 2 if is_volume else 0
        self.clear_object()
        self.auto_ids = {}

    def use_labels(self, labels: np.ndarray) -> None:
        """Write into `labels` from now on (no copy), e.g. a Labels layer's own array."""
        labels = np.asarray(labels)
        image = self._require_image()
        shape = image.shape if self.is_volume else image.shape[:2]
        if labels.shape != shape:
            raise InputError(f"Labels {labels.shape} do not fit the image {shape}.")
        if labels.dtype.kind not in "iu":
            raise InputError(f"Labels must hold integers, not {labels.dtype}.")
        self.labels = labels

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

    # ---- embeddings ------------------------------------------------------------------------
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

    def embedding(self, order: Iterable[int] | None = None) -> Iterator[tuple[int, int, int, bool]]:
        """Fill the cache with slices (default: current slice first, then outward) without
        changing the predictor's current image, so clicks may go on from another thread.

        Yields (done, total, slice, computed) after each slice; cached slices cost nothing.
        The one way every front end embeds ahead (CLI `embed`, napari, Slicer, `prefetch`).
        """
        order = list(order) if order is not None else self.slice_order()
        for i, z in enumerate(order):
            computed = self.predictor.cache_embedding(self.slice_image(z), self.preset,
                                                      self.bounds)
            yield i + 1, len(order), z, computed

    def embed_all(
        self,
        slices: Iterable[int] | None = None,
        progress: ProgressFn | None = None,
        cancel: CancelFn | None = None,
    ) -> int:
        """Embed many slices (default: current slice first, then outward). Returns how many.

        Raises CancelledError when `cancel()` turns true; slices already done stay cached.
        """
        done, total = 0, 0
        for done, total, _, _ in self.embedding(slices):
            if progress is not None:
                progress(done, total)
            if cancel is not None and cancel() and done < total:
                raise CancelledError(f"Embedding cancelled after {done} of {total} slices.")
        return done

    def prefetch(
        self,
        radius: int | None = None,
        progress: ProgressFn | None = None,
        cancel: CancelFn | None = None,
    ) -> int:
        """Embed slices around the current one, nearest first (see `embedding`). Returns how
        many were computed; cancelling just stops early."""
        self._require_volume()
        order = [z for z in self.slice_order()
                 if radius is None or abs(z - self.current_slice) <= radius]
        computed = 0
        for done, total, _, new in self.embedding(order):
            computed += int(new)
            if progress is not None:
                progress(done, total)
            if cancel is not None and cancel():
                break
        return computed

    # ---- prompts ---------------------------------------------------------------------------
    def set_slice(self, z: int) -> None:
        """Move to slice z. The prompts of the slice left are forgotten; its draft mask stays
        part of the object being drawn."""
        if self.is_volume and z != self.current_slice:
            self.slice_image(z)
            self.current_slice = int(z)
            self._history = [PromptState()]

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
        return self._run(new, feed_back=s)

    def set_box(self, box) -> np.ndarray:
        """Set (replace) the box of the current object and return the preview mask."""
        box = tuple(float(v) for v in np.asarray(box, dtype=float).reshape(4))
        s = self.state
        return self._run(PromptState(list(s.points), list(s.labels), box), feed_back=None)

    def _run(self, new: PromptState, feed_back: PromptState | None) -> np.ndarray:
        self.embed()
        new.fed = feed_back is not None
        self._decode(new, feed_back)
        self._history.append(new)
        return new.mask

    def _decode(self, st: PromptState, feed_back: PromptState | None) -> None:
        pred = self.predict_state(st, feed_back, defer_windows=self.defer_zoom)
        st.logits, st.window, st.mask = pred.low_res_logits[0], pred.window, pred.masks[0]
        st.score, st.note, st.pending = float(pred.scores[0]), pred.note, pred.pending
        self._set_draft(st.mask)

    def refine(self) -> np.ndarray | None:
        """Decode the current prompts again now that the zoom window they waited for
        (`state.pending`) is encoded; returns the new preview, or None when nothing waited.
        The window may say the object needs another one: `state.pending` then names it."""
        st = self.state
        if st.pending is None:
            return None
        self._decode(st, self._history[-2] if st.fed else None)
        return st.mask

    def predict_state(self, st: PromptState, feed_back: PromptState | None = None,
                      defer_windows: bool = False) -> Prediction:
        """Decode a prompt state on the current embedding; the previous state's logits (when
        given, for clicks) are the mask prompt."""
        pts = np.asarray(st.points, dtype=float) if st.points else None
        labels = np.asarray(st.labels) if st.points else None
        use = feed_back is not None and feed_back.logits is not None and bool(st.points)
        return self.predictor.predict(points=pts, labels=labels, box=st.box,
                                      mask_input=feed_back.logits if use else None,
                                      window=feed_back.window if use else None,
                                      defer_windows=defer_windows)

    def undo(self) -> np.ndarray | None:
        """Drop the last prompt; returns the previous preview (None when no prompt is left)."""
        if len(self._history) > 1:
            self._history.pop()
        self._set_draft(self.state.mask)
        return self.state.mask

    def reset_prompts(self) -> None:
        """Forget the prompts and the preview of the current slice."""
        self._history = [PromptState()]
        self._set_draft(None)

    def clear_object(self) -> None:
        """Discard the object being drawn: prompts and drafts on every slice."""
        self._history = [PromptState()]
        self.drafts = {}

    def _set_draft(self, mask: np.ndarray | None) -> None:
        z = self.current_slice if self.is_volume else 0
        if mask is None or not np.asarray(mask).any():
            self.drafts.pop(z, None)
        else:
            self.drafts[z] = np.asarray(mask, bool)

    # ---- labels ----------------------------------------------------------------------------
    def next_label(self) -> int:
        labels = self.labels if self.labels is not None else np.zeros(1, np.uint16)
        return int(labels.max()) + 1

    def commit(self, label: int | None = None, mask: np.ndarray | None = None) -> int:
        """Write the preview (or `mask`) of the current slice into the labels with a new id;
        never overwrites objects. The slice's prompts are then reset.

        Returns:
            The label id used. Raises InputError when there is nothing to commit.
        """
        self._require_image()
        mask = self.preview if mask is None else np.asarray(mask, bool)
        if mask is None or not mask.any():
            raise InputError("Nothing to commit: the current mask is empty. Add a box or a click.")
        label = self.next_label() if label is None else int(label)
        self._write(self.current_slice, mask, label, self.state)
        self.reset_prompts()
        return label

    def commit_object(self, label: int | None = None) -> int:
        """Write the object being drawn (its drafts on every slice) with one id (the next free
        one unless `label` is given), over background only. Returns the id."""
        self._require_image()
        if not self.drafts:
            raise InputError("Nothing to accept yet: draw a box or click on the object first.")
        label = self.next_label() if label is None else int(label)
        here = self.current_slice if self.is_volume else 0
        for z, mask in sorted(self.drafts.items()):  # prompts are known on this slice only
            self._write(z, mask, label, self.state if z == here else None)
        self.clear_object()
        return label

    def _write(self, z: int, mask: np.ndarray, label: int, prompts: PromptState | None) -> None:
        """Write one slice's mask over background and save it as a correction."""
        target = self.labels[z] if self.is_volume else self.labels
        if mask.shape != target.shape:
            raise InputError(f"Mask {mask.shape} does not fit the slice {target.shape}.")
        if not 0 < label <= np.iinfo(target.dtype).max:
            raise InputError(f"Label {label} does not fit the label map (1 to "
                             f"{np.iinfo(target.dtype).max}).")
        target[mask & (target == 0)] = label
        if self.corrections is not None:  # saved at once: never lose an annotation
            from .corrections import record_commit

            record_commit(self.corrections, self, mask, label, z, prompts)

    # ---- automatic segmentation --------------------------------------------------------------
    def auto(self, head, mode=None, z: int | None = None, commit: bool = False) -> np.ndarray:
        """Segment every structure of the current slice (or 2D image) with an automatic head.

        Args:
            head: a loaded `autoseg.AutoHead`, a shipped head name (e.g. "camus-patch") or the
                path of a head folder.
            mode: "dense", "box" or "refine" (default: the mode the head validated best with).
            z: the slice to segment (volumes; default the current slice).
            commit: also write each structure into `labels` (see `commit_structures`).

        Returns:
            uint16 (H, W) label map with the head's structure values (e.g. 1 LV, 2 myocardium,
            3 LA): a starting point the user corrects with clicks.
        """
        from .autoseg import load_head, segment_embedding

        if not hasattr(head, "run"):  # a name or a folder
            head = load_head(head, self.predictor)
        z = self.current_slice if z is None else int(z)
        self.embed(z)
        if self.predictor.blank:  # a uniform slice: nothing to find, nothing invented
            return np.zeros(self.slice_image(z).shape[:2], np.uint16)
        result = segment_embedding(self.predictor, head, mode).labels
        if commit:
            self.commit_structures(result, head, z)
        return result

    def auto_volume(self, head, mode=None, consistent: bool = True, commit: bool = True,
                    progress: ProgressFn | None = None, cancel: CancelFn | None = None
                    ) -> np.ndarray:
        """Segment every slice of the volume with a head, then make each structure consistent
        across slices (`autoseg.volume`); with `commit`, written like `auto(commit=True)`.

        Returns:
            uint16 (Z, H, W) label map with the head's structure values.
        """
        from .autoseg import load_head, segment_volume

        self._require_volume()
        if not hasattr(head, "run"):  # a name or a folder
            head = load_head(head, self.predictor)
        try:
            result = segment_volume(self, head, mode, consistent, progress, cancel)
        except CancelledError as exc:  # the slices finished are kept
            if commit:
                self._commit_volume(exc.labels, head)
            raise
        if commit:
            self._commit_volume(result, head)
        return result

    def _commit_volume(self, result: np.ndarray, head) -> None:
        for z in range(len(result)):
            if result[z].any():
                self.commit_structures(result[z], head, z)

    def commit_structures(self, result: np.ndarray, head, z: int | None = None) -> dict[int, int]:
        """Write a head's label map into `labels`, over background only; returns
        {structure value: label id}.

        The one label-id policy for automatic results: a structure keeps the id it got the
        first time in this session; the first time, its own value (1 LV, 2 myocardium...) when
        that id is still free, else the next free id. So a volume segmented slice by slice keeps
        one id per structure, and the user's own objects are never renumbered or overwritten.
        """
        z = self.current_slice if z is None else int(z)
        name = str(getattr(head, "name", "") or getattr(head, "metadata", {}).get("name", ""))
        used = {int(v) for v in np.unique(self.labels) if v != 0}
        ids = {}
        for value in (int(v) for v in np.unique(result) if v != 0):
            key = (name, value)
            if key not in self.auto_ids:
                free = value not in used and value not in self.auto_ids.values()
                self.auto_ids[key] = value if free else max(
                    self.next_label(), max(self.auto_ids.values(), default=0) + 1)
            ids[value] = self.auto_ids[key]
            used.add(ids[value])
            self._write(z, result == value, ids[value], None)
        return ids
