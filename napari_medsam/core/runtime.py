"""The one place that turns a `RuntimeSpec` (model, adapter, gate, profile, device, threads) into
a Predictor: the CLI, the napari widget, the Slicer module, benchmarks and scripts all call it.

    from napari_medsam.core.runtime import RuntimeSpec, build_predictor
    predictor = build_predictor(RuntimeSpec(profile="balanced"), cache)

`Runtime` keeps loaded models and backends between specs (an interactive front end switching
adapter or profile does not reload the model); `build_predictor` is the one-shot form. ONNX
profiles resolve the weights without torch (see `backends.weights`) and import it only to export
a missing ONNX file.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace
from pathlib import Path

from .checkpoints import DEFAULT_MODEL
from .embeddings import EmbeddingCache, default_cache_dir
from .errors import InputError

log = logging.getLogger(__name__)
NO_ADAPTER = ("", "none")


@dataclass(frozen=True)
class RuntimeSpec:
    """What to run.

    Attributes:
        model: "litemedsam" (built in) or the path of a SAM / MedSAM checkpoint.
        model_type: kind of a checkpoint path (guessed from its name when None).
        adapter: a LoRA adapter folder or registry name; None: the default (LiteMedSAM: the
            shipped click adapter); "" or "none": the base model.
        click_adapter: load the shipped click adapter as the default (None:
            $NAPARI_MEDSAM_CLICK_ADAPTER, on unless "0"/"off").
        gate: apply a fine-tuned adapter's domain gate (None: $NAPARI_MEDSAM_ADAPTER_GATE).
        profile: "auto" (the default: torch on a GPU when torch sees one, else the most
            accurate ONNX Runtime profile within the latency budget on this machine), "torch",
            or an ONNX Runtime profile: accurate, balanced, fast.
        device: torch device (None: cuda when torch sees a GPU); ONNX profiles run on the CPU.
        threads: CPU threads of the ONNX sessions (None: all this process may use).
        zoom: decode small objects on a re-encoded window around them (`core.zoom`): on by
            default, it lifts small-object Dice (LIDC nodules, kidneys, thin rings) and leaves
            objects over 15 % of the image as they were (docs/accuracy.md).
    """

    model: str = DEFAULT_MODEL
    model_type: str | None = None
    adapter: str | None = None
    click_adapter: bool | None = None
    gate: bool | None = None
    profile: str = "auto"
    device: str | None = None
    threads: int | None = None
    zoom: bool = True

    def __post_init__(self) -> None:
        from .profiles import CHOICES

        name = (self.profile or "torch").strip().lower()
        if name not in CHOICES:
            raise InputError(f"Unknown profile '{self.profile}'. Choose one of: "
                             f"{', '.join(CHOICES)}.")
        object.__setattr__(self, "profile", name)
        object.__setattr__(self, "model", str(self.model))

    @property
    def model_key(self) -> tuple:
        """What a loaded torch model depends on (adapters are switched on it in place)."""
        return (self.model, self.model_type, self.resolved_device(), self.click_adapter)

    def resolved_device(self) -> str:
        if self.device:
            return str(self.device)
        return "cuda" if self.profile in ("torch", "auto") and gpu_available() else "cpu"

    def resolved_profile(self) -> str:
        """"torch" for auto on a GPU machine or with a GPU asked for (`device="cuda"`: the ONNX
        profiles run on the CPU); otherwise the profile as given (an ONNX "auto" is settled by
        `build_backend` from the profiles' costs)."""
        if self.profile == "auto" and (str(self.device or "").startswith("cuda")
                                       or gpu_available()):
            return "torch"
        return self.profile

    @property
    def uses_base(self) -> bool:
        return self.adapter is not None and self.adapter.strip().lower() in NO_ADAPTER


def gpu_available() -> bool:
    """torch is installed and sees a CUDA GPU. Checked without importing torch where there is
    no NVIDIA driver (importing it costs seconds, on every command)."""
    import importlib.util
    import os

    if importlib.util.find_spec("torch") is None:
        return False
    if not os.path.exists("/proc/driver/nvidia/version") and os.name == "posix":
        return False
    import torch

    return bool(torch.cuda.is_available())


def load_torch(spec: RuntimeSpec):
    """A freshly loaded torch `SamModel` set up as `spec` says (a copy of its own: training
    jobs use this so the model a user clicks with is never touched)."""
    from .errors import require_torch

    require_torch("The torch profile (and training, other checkpoints, the GPU)")
    from .checks import device_available
    from .model import load_model

    device_available(spec.resolved_device())  # a GPU that is not there: a clear error
    model = load_model(spec.model, device=spec.resolved_device(), model_type=spec.model_type,
                       use_click_adapter=spec.click_adapter)
    apply_adapter(model, spec)
    return model


def apply_adapter(model, spec: RuntimeSpec) -> None:
    """Activate the adapter `spec` names on a loaded model (loading it once), and its gate."""
    from .adapter_registry import find_adapter
    from .adapters import CLICK_ADAPTER_NAME, adapters_of
    from .domain_gate import gate_wanted

    adapters = adapters_of(model)
    adapters.use_gate = gate_wanted() if spec.gate is None else bool(spec.gate)
    if spec.adapter is None:
        adapters.activate(CLICK_ADAPTER_NAME if CLICK_ADAPTER_NAME in adapters.names else None)
    elif spec.uses_base:
        adapters.activate(None)
    else:
        folder = find_adapter(spec.adapter)
        loaded = next((n for n, f in adapters.folders.items()
                       if Path(f).resolve() == folder.resolve()), None)
        adapters.activate(loaded or adapters.load(folder))


def build_backend(spec: RuntimeSpec, model=None, folder: str | Path | None = None,
                  budget=None):
    """The backend `spec` asks for.

    Args:
        model: a loaded `SamModel` to run (torch) or to export from (ONNX: its active adapter
            is exported merged); default: loaded (torch) or resolved without torch (ONNX).
        folder: ONNX export folder (default <per-user cache>/onnx).
        budget: `profiles.Budget` for "auto" (default 60 ms per click, 1.5 s per slice).
    """
    from .backends import onnx_backend_for
    from .backends.weights import ModelInfo
    from .profiles import get_profile

    if spec.resolved_profile() == "torch":
        from .backends.torch_backend import TorchBackend

        return TorchBackend(model if model is not None else load_torch(spec))
    info = ModelInfo.from_model(model) if model is not None else model_info(spec)
    name = concrete_profile(spec, info, folder, budget)
    return onnx_backend_for(get_profile(name), info, folder, model, spec.threads,
                            use_gate=spec.gate)


def concrete_profile(spec: RuntimeSpec, info=None, folder: str | Path | None = None,
                     budget=None) -> str:
    """The profile `spec` runs as: "auto" becomes "torch" on a GPU, else the most accurate ONNX
    profile within the budget (costs measured here when kept, else shipped); others as given.

    Args:
        info: the `backends.weights.ModelInfo` of the model (resolved from `spec` when None).
    """
    if spec.profile != "auto" or spec.resolved_profile() == "torch":
        return spec.resolved_profile()
    from .profiles import choose_auto, profile_costs

    info = info if info is not None else model_info(spec)
    # no benchmark on a first run: the costs measured here when kept, else the shipped ones
    costs = profile_costs(info, spec.threads, folder=folder, measure_missing=False)
    name = choose_auto(costs, budget)
    log.info("auto profile: %s", name)
    return name


def model_info(spec: RuntimeSpec):
    """The ONNX `ModelInfo` (weights, adapter) of `spec`, resolved without torch."""
    from .backends import resolve_model

    adapter = None if (spec.adapter is None or spec.uses_base) else spec.adapter
    clicks = False if spec.uses_base else spec.click_adapter
    return resolve_model(spec.model, spec.model_type, adapter, clicks)


def default_cache(cache_dir: str | Path | None = None, disk: bool = True) -> EmbeddingCache:
    """The embedding cache every front end uses: memory, plus the per-user disk folder (or
    `cache_dir`) unless `disk` is False."""
    disk_dir = (cache_dir or default_cache_dir() / "embeddings") if disk else None
    if disk_dir is not None:  # a folder given that cannot be used is refused before any work
        from .checks import output_folder
        from .errors import InputError

        try:
            output_folder(disk_dir, "embedding cache folder")
        except InputError as exc:
            if cache_dir:
                raise
            log.warning("%s Embeddings are kept in memory only.", exc)
            disk_dir = None
    return EmbeddingCache(disk_dir=disk_dir)


def build_predictor(spec: RuntimeSpec | None = None, cache: EmbeddingCache | None = None,
                    **kwargs):
    """A Predictor for `spec` (default: LiteMedSAM with its click adapter on torch) over `cache`
    (default: memory only). `kwargs` go to `build_backend`."""
    from .predictor import Predictor

    spec = spec or RuntimeSpec()
    return Predictor(backend=build_backend(spec, **kwargs),
                     cache=cache if cache is not None else EmbeddingCache(), zoom=spec.zoom)


class Runtime:
    """Loaded models and backends reused across specs: the interactive front ends switch
    adapter or profile without reloading the model (decoder adapters keep embeddings valid).

    A torch model is loaded only when a spec needs one (the torch profile, or `model()` for
    training and heads); ONNX profiles of the built-in model run without it.
    """

    def __init__(self) -> None:
        self._models: dict[tuple, object] = {}
        self._backends: dict[RuntimeSpec, object] = {}
        # a warm-up thread and a job may ask for the same spec at once: one builds, one waits
        self._lock = threading.RLock()

    def adopt(self, model, spec: RuntimeSpec) -> None:
        """Use an already loaded model for `spec`'s model setting (tests, the launcher)."""
        self._models[spec.model_key] = model

    def loaded(self, spec: RuntimeSpec):
        """The torch model of `spec`'s setting if it is loaded already, else None."""
        return self._models.get(spec.model_key)

    def model(self, spec: RuntimeSpec):
        """The torch model of `spec` (loaded once per model setting), its adapter active."""
        key = spec.model_key
        with self._lock:
            if key not in self._models:
                if len(self._models) >= 1:  # one model in memory at a time: they are large
                    self._models.clear()
                    self._backends.clear()
                self._models[key] = load_torch(replace(spec, adapter=None))
            model = self._models[key]
            apply_adapter(model, spec)
            return model

    def backend(self, spec: RuntimeSpec):
        """The backend of `spec` (made once per spec; torch backends share the model)."""
        if spec.resolved_profile() == "torch":
            from .backends.torch_backend import TorchBackend

            return TorchBackend(self.model(spec))
        with self._lock:
            if spec not in self._backends:
                self._backends[spec] = self._build(spec)
            return self._backends[spec]

    def _build(self, spec: RuntimeSpec):
        model = self.loaded(spec)
        if model is not None:  # export from the model at hand (its adapters are loaded)
            apply_adapter(model, spec)
        return build_backend(spec, model=model)

    def warm(self, spec: RuntimeSpec) -> bool:
        """Make `spec`'s backend and open its sessions before the first image needs them (a
        front end runs this in a thread when it opens), so the first click does not wait for
        the model to load or compile. A backend already handed out is left alone (its sessions
        may be in use). Returns whether anything was prepared."""
        with self._lock:
            if spec.resolved_profile() == "torch":
                if self.loaded(spec) is not None:
                    return False
                self.model(spec)
                return True
            if spec in self._backends:
                return False
            backend = self._build(spec)
            backend.warm()
            self._backends[spec] = backend
            return True

    def warm_in_background(self, spec: RuntimeSpec) -> threading.Thread:
        """`warm` in a daemon thread (napari's dock and Slicer's panel start it when they open);
        a failure is only logged: the first embedding meets it again and says it in plain words."""

        def run() -> None:
            try:
                self.warm(spec)
            except Exception as exc:
                log.info("Preparing the model ahead failed (%s: %s); it is tried again on the "
                         "first image.", type(exc).__name__, exc)

        thread = threading.Thread(target=run, name="napari-medsam-warm", daemon=True)
        thread.start()
        return thread

    def predictor(self, spec: RuntimeSpec, cache: EmbeddingCache):
        from .predictor import Predictor

        return Predictor(backend=self.backend(spec), cache=cache, zoom=spec.zoom)
