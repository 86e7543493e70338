"""What the dock widget runs off the UI thread: model loading, session building, embedding.

No Qt here. `embed_job` is a generator run by `napari.qt.threading`; it yields small messages
the widget shows (progress) or takes over (the loaded model, the built session). Embeddings are
computed with `Predictor.compute_embedding` and stored in the shared cache, so the predictor the
user is clicking with on the UI thread keeps its current embedding while slices fill in.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .core.embeddings import EmbeddingCache, default_cache_dir
from .core.predictor import Predictor
from .core.session import Session

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSpec:
    """Which model to run: registry name or checkpoint path, its kind, device and options."""

    name: str = "litemedsam"
    model_type: str | None = None
    device: str = "cpu"
    profile: str | None = None
    adapter: str | None = None  # adapter folder; "" for the base model; None: as loaded


def optional_core(name: str):
    """`napari_medsam.core.<name>` when that module exists (built by other parts), else None."""
    try:
        return importlib.import_module(f"napari_medsam.core.{name}")
    except ImportError:
        return None


def adapter_choices() -> list[tuple[str, str]]:
    """(label, folder) of the adapters core/adapters.py knows: shipped ones and the registry."""
    lister = getattr(optional_core("adapters"), "list_adapters", None)
    if lister is None:
        return []
    try:
        found = lister()
    except Exception as exc:  # a broken registry must not break the widget
        log.warning("Could not list adapters: %s", exc)
        return []
    return [(f"{a.modality}/{a.name}" + (" (shipped)" if a.shipped else ""), str(a.path))
            for a in found]


def profile_names() -> list[str]:
    """Execution profiles offered by core/profiles.py (empty when that module is absent)."""
    mod = optional_core("profiles")
    names = getattr(mod, "CHOICES", None) or list(getattr(mod, "PROFILES", None) or [])
    return [str(n) for n in names]


class Engine:
    """The loaded model and the embedding cache shared by every image in the widget.

    Args:
        cache_dir: on-disk embedding cache (default: the per-user cache), so reopening an
            image reuses its embeddings; None with `disk=False` keeps them in memory only.
    """

    def __init__(self, cache_dir: str | Path | None = None, disk: bool = True):
        disk_dir = (cache_dir or default_cache_dir() / "embeddings") if disk else None
        self.cache = EmbeddingCache(disk_dir=disk_dir)
        self.spec: ModelSpec | None = None
        self.model = None
        self._default_adapter: str | None = None
        self._backends: dict[ModelSpec, object] = {}

    def use(self, model, spec: ModelSpec) -> None:
        """Adopt an already loaded model for `spec` (tests, scripts)."""
        self.model, self.spec = model, spec
        self._default_adapter = _active_adapter(model)

    def load(self, spec: ModelSpec):
        """The model for `spec`, loaded (off the UI thread) only when it changed."""
        if self.model is not None and self.spec == spec:
            return self.model
        def base(s: ModelSpec | None):
            return s and (s.name, s.model_type, s.device, s.profile)

        if self.model is None or base(self.spec) != base(spec):
            from .core.model import load_model

            self.model = load_model(spec.name, device=spec.device, model_type=spec.model_type)
            self._default_adapter = _active_adapter(self.model)
            self._backends.clear()
        _set_adapter(self.model, spec.adapter, self._default_adapter)
        self.spec = spec
        return self.model

    def predictor(self, spec: ModelSpec) -> Predictor:
        """A predictor over the loaded model on the shared cache; with an execution profile
        (core/backends), through that profile's backend (made once per model setting)."""
        model = self.load(spec)
        make = getattr(optional_core("backends"), "make_backend", None)
        if not spec.profile or spec.profile == "torch" or make is None:
            return Predictor(model, self.cache)
        if spec not in self._backends:
            self._backends[spec] = make(spec.profile, model=model)
        return Predictor(cache=self.cache, backend=self._backends[spec])


def _active_adapter(model) -> str | None:
    """The adapter load_model activated (e.g. the shipped click adapter), or None."""
    return getattr(getattr(model, "adapters", None), "active", None)


def _set_adapter(model, folder: str | None, default: str | None) -> None:
    """Activate the adapter in `folder` ("" = base model, None = as the model was loaded)."""
    mod = optional_core("adapters")
    if mod is None or (folder is None and _active_adapter(model) == default):
        return
    adapters = mod.adapters_of(model)
    if folder:
        adapters.activate(adapters.load(folder))
    else:
        adapters.activate(default if folder is None else None)


@dataclass
class EmbedRequest:
    """One embedding run: the image, how to see it, and which slices.

    `want` returns the slice the user is looking at; for a volume it is embedded first and the
    rest nearest-first, so the slice under the cursor is ready as soon as possible.
    """

    engine: Engine
    spec: ModelSpec
    data: np.ndarray
    is_volume: bool
    preset: str
    session: Session | None = None
    all_slices: bool = False
    want: Callable[[], int] = field(default=lambda: 0)


def build_session(predictor: Predictor, data, is_volume: bool, preset: str) -> Session:
    session = Session(predictor, preset=preset)
    session.set_image(data, is_volume=is_volume)
    return session


def embed_job(req: EmbedRequest) -> Iterator[tuple]:
    """Load, build, embed. Yields ("status", text), ("session", s) and
    ("progress", done, total, z); stops cleanly between slices when the worker is quit."""
    session = req.session
    if session is None:
        if req.engine.model is None or req.engine.spec != req.spec:
            yield ("status", "Loading the model…")
        req.engine.load(req.spec)
        if req.spec.profile and req.spec.profile != "torch":
            yield ("status", f"Preparing the '{req.spec.profile}' profile (the first time it "
                             "converts the model, which can take a minute)…")
        predictor = req.engine.predictor(req.spec)
        yield ("status", "Preparing the image…")
        session = build_session(predictor, req.data, req.is_volume, req.preset)
        yield ("session", session)
    n = session.n_slices
    pending = set(range(n)) if req.all_slices else {min(max(int(req.want()), 0), n - 1)}
    total, done = len(pending), 0
    yield ("progress", 0, total, -1)
    predictor = session.predictor
    while pending:
        want = min(max(int(req.want()), 0), n - 1)
        z = min(pending, key=lambda k: (abs(k - want), k))
        pending.discard(z)
        image = session.slice_image(z)
        key = predictor.image_key(image, session.preset, session.bounds)
        if key not in predictor.cache:
            entry = predictor.compute_embedding(image, session.preset, session.bounds)
            predictor.cache.put(key, entry)
        done += 1
        yield ("progress", done, total, z)


def safe_embed_job(req: EmbedRequest) -> Iterator[tuple]:
    """embed_job, with any failure handed to the UI as a message instead of a traceback."""
    try:
        yield from embed_job(req)
    except Exception as exc:  # shown to the user in plain words by the widget
        yield ("error", exc)
