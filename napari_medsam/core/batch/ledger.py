"""The batch ledger: one small JSON file per finished or failed item, named by its content key.

Workers write their own entry (atomically, after the item's outputs are in place), so a batch
interrupted at any moment knows exactly what is finished; a re-run skips an item whose entry says
"done" and whose outputs still exist. One file per item means no two writers ever share a file.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..atomic import atomic_text

log = logging.getLogger(__name__)
DONE, FAILED, SKIPPED, CANCELLED = "done", "failed", "skipped", "cancelled"


class Ledger:
    """Entries of one output folder (`<output>/ledger/<key>.json`)."""

    def __init__(self, output: str | Path):
        self.folder = Path(output) / "ledger"

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def get(self, key: str) -> dict | None:
        """The entry of `key`, or None (a damaged entry counts as none: the item runs again)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            entry = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            log.warning("Ignoring the damaged ledger entry %s (%s).", path, exc)
            return None
        return entry if isinstance(entry, dict) and entry.get("key") == key else None

    def finished(self, key: str) -> dict | None:
        """The entry of `key` when it is done and every output it lists still exists."""
        entry = self.get(key)
        if entry is None or entry.get("status") != DONE:
            return None
        if not all(Path(p).exists() for p in entry.get("outputs", [])):
            return None
        return entry

    def write(self, entry: dict) -> Path:
        """Store an entry (atomically: readers see the old entry or the new one)."""
        return atomic_text(self.path(entry["key"]), json.dumps(entry, indent=1, default=str))
