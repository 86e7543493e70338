"""Work the dock runs off the UI thread, Qt-free: each job is a generator of small messages.

    ("status", text)                a sentence for the status line
    ("progress", done, total, ...)  drives the progress bar (extra items are the job's own)
    ("done", result)                the job's result
    ("error", exception)            shown in plain words; what was done is kept

Every job gets a `threading.Event` it checks between steps (Cancel sets it). `in_thread` runs a
blocking call (propagation, fine-tuning) in a thread of its own and relays what it reports;
`embed_job` is a plain generator.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.errors import CancelledError, MedSAMError
from ..core.runtime import RuntimeSpec
from ..core.session import Session

Emit = Callable[[tuple], None]


def say_job_error(host, exc: BaseException, what: str, cancelled: str, kept: str) -> None:
    """Tell how a job ended in `exc`: a stop keeps what was done (`cancelled`, info), a
    MedSAMError says itself (warning), anything else is a failure of `what` that kept `kept`."""
    if isinstance(exc, CancelledError):
        host.notify("info", cancelled)
    elif isinstance(exc, MedSAMError):
        host.notify("warning", str(exc))
    else:
        host.notify("error", f"{what} failed ({type(exc).__name__}: {exc}). {kept}")


def release(host, ann) -> None:
    """A volume job on `ann` ended: show its labels, let it take prompts again, and tell the
    dock that labels changed."""
    if ann is not None:
        ann.labels.refresh()
        ann.busy = False
        ann.resume()
    host.objects_changed()


def in_thread(work: Callable[[Emit, Callable[[], bool]], object],
              stop: threading.Event) -> Iterator[tuple]:
    """Run `work(emit, stopped)` in a thread of its own; yield what it emits, then ("done",
    result) or ("error", exception). Closing the generator (the worker was quit) sets `stop`,
    which `work` polls through `stopped()`."""
    messages: queue.Queue = queue.Queue()

    def run() -> None:
        try:
            messages.put(("done", work(messages.put, stop.is_set)))
        except BaseException as exc:  # handed to the UI, which says it in plain words
            messages.put(("error", exc))
        finally:
            messages.put(None)

    threading.Thread(target=run, name="napari-medsam-job", daemon=True).start()
    ended = False
    try:
        while True:
            try:
                msg = messages.get(timeout=0.2)
            except queue.Empty:
                yield ("tick",)  # lets the worker notice a quit while the work runs
                continue
            if msg is None:
                ended = True
                return
            yield msg
    finally:
        if not ended:  # closed early: the worker was quit (Cancel, or the dock closed)
            stop.set()


@dataclass
class EmbedRequest:
    """One embedding run: the image, how to see it, and which slices.

    `want` returns the slice the user is looking at; for a volume it is embedded first and the
    rest nearest-first, so the slice under the cursor is ready as soon as possible.
    """

    engine: object
    spec: RuntimeSpec
    data: np.ndarray
    is_volume: bool
    preset: str
    session: Session | None = None
    all_slices: bool = False
    want: Callable[[], int] = field(default=lambda: 0)


def embed_job(req: EmbedRequest, stop: threading.Event) -> Iterator[tuple]:
    """Load, build, embed. Yields ("status", text), ("session", s) and
    ("progress", done, total, z); stops between slices once `stop` is set."""
    try:
        session = req.session
        if session is None:
            yield ("status", "Loading the model…" if req.spec.profile == "torch" else
                   f"Preparing the '{req.spec.profile}' profile (the first time it converts "
                   "the model, which can take a minute)…")
            session = Session(req.engine.predictor(req.spec), preset=req.preset)
            session.set_image(req.data, is_volume=req.is_volume)
            yield ("session", session)
        n = session.n_slices
        pending = set(range(n)) if req.all_slices else {min(max(int(req.want()), 0), n - 1)}
        total = len(pending)
        yield ("progress", 0, total, -1)
        while pending and not stop.is_set():
            want = min(max(int(req.want()), 0), n - 1)
            z = min(pending, key=lambda k: (abs(k - want), k))
            pending.discard(z)
            for _ in session.embedding([z]):
                pass
            yield ("progress", total - len(pending), total, z)
    except Exception as exc:  # shown to the user in plain words by the dock
        yield ("error", exc)


@dataclass
class FinetuneRequest:
    """One fine-tuning run: the model setting, the corrections folder and the adapter to write."""

    engine: object
    spec: RuntimeSpec
    project: Path
    out: Path
    modality: str = "any"
    steps: int = 80
    minutes: float | None = None


def finetune_work(req: FinetuneRequest, emit: Emit, stopped: Callable[[], bool]):
    """Train an adapter on the saved corrections (blocking; run through `in_thread`).

    The core's `finetune_on_corrections` (shared with the Slicer module) trains a separate copy
    of the model, so the model the user clicks with is never touched while training runs; the
    panel loads the saved adapter only on "Use this adapter". Embeddings come from the dock's
    shared cache (thread-safe): corrected images are not encoded again. Emits ("status", text),
    ("start", n_train, n_val, steps), ("progress", step, steps, Progress); returns
    (TrainResult, adapter folder).
    """
    from ..core.training.on_corrections import finetune_on_corrections

    return finetune_on_corrections(
        req.spec, req.engine.cache, req.project, req.out, req.modality, req.steps, req.minutes,
        progress=lambda p: emit(("progress", p.step, p.steps, p)), cancel=stopped,
        status=lambda text: emit(("status", text)),
        started=lambda n_train, n_val, steps: emit(("start", n_train, n_val, steps)),
    )
