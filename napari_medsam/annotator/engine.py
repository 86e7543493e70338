"""The dock's model and embedding cache, Qt-free: a core `Runtime` plus one `EmbeddingCache`.

Every image in the dock shares them: the model is loaded once per model setting (switching the
adapter or profile reuses it) and embeddings are cached in memory and in the per-user disk cache,
so reopening an image reuses its embeddings.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from ..core.predictor import Predictor
from ..core.runtime import Runtime, RuntimeSpec, default_cache

log = logging.getLogger(__name__)


class Engine:
    """The runtime and embedding cache shared by every image in the dock.

    Args:
        cache_dir: on-disk embedding cache (default: the per-user cache).
        disk: False keeps embeddings in memory only.
    """

    def __init__(self, cache_dir: str | Path | None = None, disk: bool = True):
        self.cache = default_cache(cache_dir, disk)
        self.runtime = Runtime()
        self.spec: RuntimeSpec | None = None

    def use(self, model, spec: RuntimeSpec) -> None:
        """Adopt an already loaded model for `spec`'s model setting (tests, the launcher)."""
        self.runtime.adopt(model, spec)
        self.spec = spec

    def predictor(self, spec: RuntimeSpec) -> Predictor:
        """A predictor for `spec` on the shared cache (built off the UI thread)."""
        self.spec = spec
        return self.runtime.predictor(spec, self.cache)

    def warm_in_background(self, spec: RuntimeSpec) -> threading.Thread:
        """Load or compile `spec`'s model in a thread (`Runtime.warm_in_background`), so that
        the first image's embedding does not wait for it."""
        return self.runtime.warm_in_background(spec)

    @property
    def model(self):
        """The torch model in use (None until one is loaded)."""
        return self.runtime.loaded(self.spec) if self.spec is not None else None


def adapter_choices() -> list[tuple[str, str]]:
    """(label, folder) of the shipped adapters and those in the user's registry."""
    from ..core.adapter_registry import list_adapters

    try:
        found = list_adapters()
    except Exception as exc:  # a broken registry must not break the dock
        log.warning("Could not list adapters: %s", exc)
        return []
    return [(f"{a.modality}/{a.name}" + (" (shipped)" if a.shipped else ""), str(a.path))
            for a in found]
