"""The Logic's background work: embedding a volume ahead, propagation, automatic heads.

Mixed into `MedSAMLogic` (kept apart only to keep files small). Each `start*` method returns a
`BackgroundJob` (progress, cancel); the heavy part runs on the core Session in a thread and the
segment is written on the polling thread when it ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from . import geometry as geo
from . import nodes, tasks
from .jobs import BackgroundJob

ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], bool]


class BusyError(RuntimeError):
    """A propagation or automatic run is using the model; prompts wait for it."""


@dataclass
class Entry:
    """One volume cut across one array axis: its core Session and the frame between them."""

    session: object
    mtime: int
    frame: geo.SliceFrame  # array axis <-> the core's slices (the CLI's and napari's frame)


class BackgroundWork:
    """Embedding, propagation and automatic heads for `MedSAMLogic` (needs its `_entry`,
    `_ready`, `preview`, `_union` and `getPredictor`)."""

    busyJob: BackgroundJob | None = None

    # ---- embedding the volume ahead of the clicks ------------------------------------------
    def iterEmbedding(self, volumeNode, axis: int = 0, start: int | None = None,
                      slices=None) -> Iterator[tuple[int, int]]:
        """Encode slices (start first, then outward) into the cache; yields (done, total).

        Only the cache is written, so clicks on other slices may go on meanwhile.
        """
        entry = self._entry(volumeNode, axis)
        yield from tasks.embed_slices(entry.session, self._order(entry, start, slices))

    @staticmethod
    def _order(entry: Entry, start: int | None, slices=None) -> list[int]:
        """Core slice indices to embed: `slices` (array indices), else all from `start` out."""
        frame, session = entry.frame, entry.session
        if slices is not None:
            return [frame.core_index(z) for z in slices]
        return session.slice_order(None if start is None else frame.core_index(start))

    def startEmbedding(self, volumeNode, axis: int = 0, start: int | None = None) -> BackgroundJob:
        """Encode the whole volume in a background thread (progress, cancel)."""
        entry = self._entry(volumeNode, axis)
        session, order = entry.session, self._order(entry, start)

        def work(progress: ProgressFn, cancelled: CancelFn) -> int:
            done = 0
            for done, total in tasks.embed_slices(session, order):
                progress(done, total)
                if cancelled():
                    break
            return done

        return BackgroundJob(work, name="Embedding")

    # ---- propagation through slices / frames -------------------------------------------------
    def startPropagation(self, volumeNode, segmentationNode, segmentId: str, index: int,
                         axis: int = 0, mode: str = "volume",
                         direction: str = "both") -> BackgroundJob:
        """Propagate the segment's mask on slice `index` to its neighbours, in the background.

        Slices where the segment already has voxels are kept as they are (and guide the next
        slices). When the job ends, the new slices are added to the segment on the polling
        thread; a cancelled run keeps the slices it finished.
        """
        entry = self._ready(volumeNode, axis, index)
        kji = nodes.segment_array(segmentationNode, segmentId, volumeNode) > 0
        if not geo.slice_of(kji, axis, index).any():
            _, preview = self.preview(volumeNode, axis)
            if preview is None or not preview.any():
                raise nodes.NodeError(
                    f"The segment is empty on slice {index}: segment it there first."
                )
            np.moveaxis(kji, axis, 0)[index] = preview
        stack, start = entry.frame.stack(kji), entry.frame.core_index(index)
        if direction in ("up", "down") and entry.frame.reorientation.flips[0]:
            direction = "down" if direction == "up" else "up"  # "up": growing array index

        def work(progress: ProgressFn, cancelled: CancelFn):
            return tasks.propagate(entry.session, stack, start, mode, direction, progress,
                                   cancelled)

        def finish(outcome: tasks.PropagationOutcome):
            self._union(segmentationNode, segmentId, volumeNode, entry.frame.to_kji(outcome.stack))
            outcome.slices = [entry.frame.core_index(z) for z in outcome.slices]
            outcome.scores = {entry.frame.core_index(z): v for z, v in outcome.scores.items()}
            return outcome

        self.busyJob = BackgroundJob(work, finish, name="Propagation")
        return self.busyJob

    def propagate(self, volumeNode, segmentationNode, segmentId: str, index: int,
                  axis: int = 0, mode: str = "volume", direction: str = "both"):
        """Blocking form of `startPropagation`; returns the outcome (slices, scores, stops)."""
        return self.startPropagation(volumeNode, segmentationNode, segmentId, index, axis, mode,
                                     direction).wait()

    # ---- automatic heads --------------------------------------------------------------------
    def startAuto(self, volumeNode, segmentationNode, head: str, slices=None,
                  axis: int = 0) -> BackgroundJob:
        """Run an automatic head on slices (default: all) in the background; one segment per
        structure of the head, added to (never replacing) what is there."""
        entry = self._entry(volumeNode, axis)
        loaded = tasks.load_head(head, self.getPredictor())
        order = self._order(entry, None, slices if slices is not None else
                            range(entry.session.n_slices))

        def work(progress: ProgressFn, cancelled: CancelFn):
            return tasks.auto_segment(entry.session, loaded, order, progress, cancelled)

        def finish(outcome: tasks.AutoOutcome) -> dict[str, str]:
            ids = {}
            labels = entry.frame.to_kji(outcome.labels)
            for value, name in zip(outcome.values, outcome.names, strict=True):
                ids[name] = nodes.segment_id(segmentationNode, name)
                self._union(segmentationNode, ids[name], volumeNode, labels == value)
            return ids

        self.busyJob = BackgroundJob(work, finish, name="Automatic segmentation")
        return self.busyJob
