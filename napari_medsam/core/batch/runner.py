"""Run a batch on dask.distributed: a LocalCluster sized to this machine by default, or any
cluster by its scheduler address.

Items already done (ledger entry by content key, outputs present) are skipped; the rest are
submitted as one task each, with `retries` so a task whose worker dies runs again elsewhere (the
cluster's nannies restart dead workers). A failing item is recorded and the batch goes on;
Ctrl-C cancels what is pending and the summary so far is still given.
"""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from .items import Item, content_key, item_dict
from .ledger import CANCELLED, DONE, FAILED, SKIPPED, Ledger
from .tasks import TaskOptions, describe, prepare, run_item

log = logging.getLogger(__name__)


def usable_cores() -> int:
    """CPUs this process may run on (its affinity, else the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS / Windows
        return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def open_client(scheduler: str | None = None, workers: int | None = None,
                threads_per_worker: int = 1, retries: int = 3) -> Iterator:
    """A dask `Client`: on the cluster at `scheduler` (an address such as tcp://host:8786), or
    on a new LocalCluster of `workers` processes (default: one per usable core) with
    `threads_per_worker` threads each; its nannies restart a worker that dies and its scheduler
    runs a task whose worker died again elsewhere, `retries` times (dask's allowed-failures; a
    running cluster keeps its own). Both are closed on exit."""
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError as exc:
        from ..errors import InputError

        raise InputError("The batch verb runs on dask.distributed: "
                         "pip install 'napari-medsam[batch]'") from exc
    quiet = logging.getLogger("distributed")  # its INFO chatter would bury the progress bar
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    cluster = None
    try:
        if scheduler:
            client = Client(scheduler)
        else:
            with dask.config.set({"distributed.scheduler.allowed-failures": int(retries)}):
                cluster = LocalCluster(n_workers=workers or usable_cores(),
                                       threads_per_worker=threads_per_worker, processes=True,
                                       dashboard_address=None, silence_logs=logging.ERROR)
            client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
    finally:
        if cluster is not None:
            cluster.close()
        quiet.setLevel(level)


@dataclass
class Summary:
    """What a batch did: one ledger-like entry per item (in item order), plus the wall time."""

    task: str
    entries: list[dict]
    wall: float = 0.0
    interrupted: bool = False
    profile: str = ""
    counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.counts = {s: sum(e["status"] == s for e in self.entries)
                       for s in (DONE, SKIPPED, FAILED, CANCELLED)}

    @property
    def failed(self) -> list[dict]:
        return [e for e in self.entries if e["status"] == FAILED]

    @property
    def ok(self) -> bool:
        return not self.interrupted and not self.counts[FAILED] and not self.counts[CANCELLED]

    def records(self) -> list[dict]:
        """Eval records of every finished item (done now or before), in item order."""
        return [r for e in self.entries if e["status"] in (DONE, SKIPPED)
                for r in e.get("records", [])]

    def table(self) -> str:
        """The end-of-batch table: items, mean / max seconds per item by status; failures."""
        lines = [f"batch {self.task}: {len(self.entries)} item(s) in {self.wall:.1f} s"
                 + (f", profile {self.profile}" if self.profile else "")
                 + (" (interrupted)" if self.interrupted else ""),
                 f"{'status':<10}{'items':>7}{'mean s':>9}{'max s':>9}"]
        for status, n in self.counts.items():
            secs = [e["seconds"] for e in self.entries
                    if e["status"] == status and status != SKIPPED and e.get("seconds")]
            mean = f"{statistics.fmean(secs):>9.2f}{max(secs):>9.2f}" if secs else \
                f"{'-':>9}{'-':>9}"
            lines.append(f"{status:<10}{n:>7}{mean}")
        if self.counts[DONE] and self.wall > 0:
            lines.append(f"{60 * self.counts[DONE] / self.wall:.1f} items/min")
        for e in self.failed:
            error = (e.get("error") or "?").strip().splitlines()[0]
            lines.append(f"FAILED {e['item']['rel']}: {error}")
        return "\n".join(lines)


def run_batch(client, items: list[Item], options: TaskOptions, retries: int = 3,
              progress: bool = True, force: bool = False,
              task: Callable[[Item, str, TaskOptions], dict] = run_item) -> Summary:
    """Run `task` on every item not done yet and return the summary.

    Args:
        client: a dask `Client` (see `open_client`).
        retries: how many more times an item runs when its task raises past its own error
            handling (a worker's death is retried by the scheduler: see `open_client`); then
            it is recorded as failed.
        progress: show a progress bar with the total and an ETA.
        force: run every item, even those the ledger says are done.
        task: the per-item function (tests wrap `run_item`).
    """
    from distributed import as_completed
    from tqdm import tqdm

    start = time.perf_counter()
    ledger = Ledger(options.output)
    key_options = options.key_options()
    keys = [content_key(item, key_options) for item in items]
    entries: list[dict | None] = [None] * len(items)
    for i, key in enumerate(keys):
        done = None if force else ledger.finished(key)
        if done is not None:
            entries[i] = {**done, "status": SKIPPED}
    todo = [i for i, e in enumerate(entries) if e is None]
    bar = tqdm(total=len(items), initial=len(items) - len(todo), unit="item",
               desc=f"batch {options.task}", disable=not progress, smoothing=0.1)
    interrupted, profile, futures = False, "", {}
    try:
        if todo:
            resolved = client.submit(prepare, options, pure=False, retries=retries).result()
            profile = resolved.spec.profile
            token = uuid.uuid4().hex[:8]
            futures = {client.submit(task, items[i], keys[i], resolved, pure=False,
                                     retries=retries, key=f"{options.task}-{token}-{i}"): i
                       for i in todo}
            for future in as_completed(futures):
                i = futures[future]
                entries[i] = _entry(future, items[i], keys[i], options, ledger)
                bar.update(1)
    except KeyboardInterrupt:
        interrupted = True
        client.cancel([f for f in futures if not f.done()])
    finally:
        bar.close()
    for i, entry in enumerate(entries):
        if entry is None:
            entries[i] = _missing(items[i], keys[i], options, CANCELLED, "stopped before it ran")
    return Summary(options.task, entries, time.perf_counter() - start, interrupted, profile)


def _entry(future, item: Item, key: str, options: TaskOptions, ledger: Ledger) -> dict:
    """The entry of a completed future; a task that failed past its retries (its worker died
    every time) is recorded in the ledger here."""
    if future.status == "finished":
        return future.result()
    if future.status == "cancelled":
        return _missing(item, key, options, CANCELLED, "cancelled")
    error = describe(future.exception()) if future.status == "error" else \
        f"the cluster lost the task ({future.status})"
    entry = _missing(item, key, options, FAILED, error)
    ledger.write(entry)
    return entry


def _missing(item: Item, key: str, options: TaskOptions, status: str, error: str) -> dict:
    return {"key": key, "item": item_dict(item), "task": options.task, "status": status,
            "outputs": [], "error": error, "seconds": 0.0}

