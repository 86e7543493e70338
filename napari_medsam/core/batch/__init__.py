"""Whole archives on a cluster: embed, auto-segment or evaluate every image of a folder tree, a
list file, DICOM series folders or a manifest, one dask task per item (docs/batch.md).

- items.py: what to run over, and the content key of an item.
- tasks.py: what a worker does with one item (the single-process verbs' own code paths).
- ledger.py: one JSON entry per finished / failed item, for resume.
- runner.py: the dask client (LocalCluster by default), submission, retries, summary.

dask.distributed is imported only by the runner, so the rest stays importable without it.
"""

from .items import Item, content_key, discover
from .ledger import Ledger
from .runner import Summary, open_client, run_batch, usable_cores
from .tasks import TASKS, TaskOptions, prepare, run_item

__all__ = ["TASKS", "Item", "Ledger", "Summary", "TaskOptions", "content_key", "discover",
           "open_client", "prepare", "run_batch", "run_item", "usable_cores"]
