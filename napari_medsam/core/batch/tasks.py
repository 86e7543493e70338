"""What a worker does with one item: embed, auto-segment or evaluate it through the very code the
single-process verbs run (`core.runtime`, `core.volume.open_image`, `Session`, `write_labels`,
`evaluation`), so a batch's outputs equal the CLI's bit for bit at the same thread count.

Each worker process keeps one `Runtime` (models and backends load once per process, reused by
every later item) and writes its item's ledger entry after the outputs are in place.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ..errors import InputError, MedSAMError
from ..io import NIFTI_SUFFIXES, _suffix
from ..runtime import RuntimeSpec
from .items import OUTPUT_MARK, Item, item_dict
from .ledger import DONE, FAILED, Ledger

TASKS = ("embed", "auto", "eval")
_PROCESS: dict = {}  # this process's Runtime and thread setting (one per worker process)


@dataclass(frozen=True)
class TaskOptions:
    """One batch's task and its settings (sent to every worker with each item).

    Attributes:
        task: "embed" (fill the cache), "auto" (label maps from a head) or "eval" (records).
        output: the batch folder: ledger, label maps (under labels/), merged records.
        spec: model and profile; "auto" is resolved once by `prepare` before the items run.
        preset, plane: intensity preset and volume plane, as the single-process verbs take them.
        cache_dir, disk_cache: the embedding cache (a folder every worker can reach).
        head, mode, beside: auto: the head, its mode, label maps beside the inputs.
        prompt, max_clicks, max_slices: eval, as `napari-medsam eval` takes them.
        threads: CPU threads of each worker's torch / ONNX runs (None: the worker's own count).
    """

    task: str
    output: str
    spec: RuntimeSpec = field(default_factory=lambda: RuntimeSpec(profile="auto"))
    preset: str = "auto"
    plane: str = "axial"
    cache_dir: str | None = None
    disk_cache: bool = True
    head: str | None = None
    mode: str | None = None
    beside: bool = False
    prompt: str = "box"
    max_clicks: int = 20
    max_slices: int | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise InputError(f"Unknown batch task '{self.task}': one of {', '.join(TASKS)}.")
        if self.task == "auto" and not self.head:
            raise InputError("batch auto needs --head (a shipped head name or a head folder).")
        if self.task == "embed" and not self.disk_cache:
            raise InputError("batch embed fills the on-disk cache: drop --no-disk-cache.")

    def key_options(self) -> dict:
        """What an item's result depends on (its content key holds these; where it runs,
        the cache folder and the thread count do not count)."""
        spec = asdict(self.spec)
        spec.pop("threads")
        out = {"task": self.task, "spec": spec, "plane": self.plane}
        if self.task == "auto":
            out.update(preset=self.preset, head=self.head, head_sha256=head_fingerprint(
                self.head), mode=self.mode, beside=self.beside)
        elif self.task == "embed":
            out.update(preset=self.preset)
        else:
            out.update(prompt=self.prompt, max_clicks=self.max_clicks,
                       max_slices=self.max_slices)
        return out


def head_fingerprint(head: str | None) -> str:
    """sha256 of a head's files (a retrained head at the same path is a new task), found the
    way `autoseg.resolve_head` finds it but without importing torch; "" when not found."""
    if not head:
        return ""
    folder = Path(head).expanduser()
    if not folder.is_dir():
        folder = Path(__file__).resolve().parents[2] / "resources" / "heads" / str(head)
    digest = hashlib.sha256()
    files = sorted(f for f in folder.iterdir() if f.is_file()) if folder.is_dir() else []
    for file in files:
        digest.update(file.name.encode() + file.read_bytes())
    return digest.hexdigest() if files else ""


# ---- per worker process --------------------------------------------------------------------
def worker_threads(options: TaskOptions) -> int | None:
    """Threads this worker gives one item: the batch's setting, else the dask worker's own."""
    if options.threads:
        return int(options.threads)
    try:
        from distributed import get_worker

        return int(get_worker().state.nthreads)
    except (ImportError, ValueError, AttributeError):
        return None


def use_threads(threads: int | None) -> None:
    """Give torch and ONNX Runtime `threads` in this process (once it is set, kept)."""
    if not threads or _PROCESS.get("threads") == threads:
        return
    os.environ["NAPARI_MEDSAM_THREADS"] = os.environ["OMP_NUM_THREADS"] = str(threads)
    if "torch" in sys.modules:  # already imported: it read OMP_NUM_THREADS at import time
        sys.modules["torch"].set_num_threads(threads)
    _PROCESS["threads"] = threads


def runtime():
    """This process's `Runtime`: every item a worker runs shares its loaded model."""
    if "runtime" not in _PROCESS:
        from ..runtime import Runtime

        _PROCESS["runtime"] = Runtime()
    return _PROCESS["runtime"]


def cuda_visible() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def prepare(options: TaskOptions) -> TaskOptions:
    """Run once on one worker before the items: "auto" becomes a concrete profile (the torch
    model on the GPU where the worker sees one, else the ONNX profile measured best on its
    CPU), and the backend is built there, so an ONNX export happens once, not per worker.
    Every item then runs with one profile, whichever worker gets it."""
    from ..runtime import concrete_profile

    threads = worker_threads(options)
    use_threads(threads)
    spec = replace(options.spec, threads=threads)
    if spec.profile == "auto":
        device = spec.device or ("cuda" if cuda_visible() else "cpu")
        spec = replace(spec, profile="torch" if device.startswith("cuda")
                       else concrete_profile(spec))
    runtime().backend(spec)
    return replace(options, spec=replace(spec, threads=options.threads))


def run_item(item: Item, key: str, options: TaskOptions) -> dict:
    """Run one item in this worker and record it in the ledger. Errors (a corrupt file, a
    missing head...) are recorded and returned, never raised: the batch goes on."""
    start, cpu = time.perf_counter(), time.process_time()
    entry = {"key": key, "item": item_dict(item), "task": options.task, "status": FAILED,
             "outputs": [], "host": platform.node(), "pid": os.getpid(), "worker": _worker()}
    try:
        threads = worker_threads(options)
        use_threads(threads)
        spec = replace(options.spec, threads=threads)
        entry["profile"] = spec.profile
        entry.update(RUNNERS[options.task](item, options, spec))
        entry["status"] = DONE
    except Exception as exc:  # recorded with its message; the next item runs
        entry["error"] = describe(exc)
    entry["seconds"] = round(time.perf_counter() - start, 3)
    entry["cpu_seconds"] = round(time.process_time() - cpu, 3)  # this process, all its threads
    entry["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    Ledger(options.output).write(entry)
    return entry


def describe(exc: BaseException) -> str:
    """An error in one line a user can act on (a traceback's last frame for unexpected ones)."""
    text = f"{type(exc).__name__}: {exc}"
    if not isinstance(exc, MedSAMError):
        frames = traceback.extract_tb(exc.__traceback__)
        if frames:
            text += f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})"
    return text


def _worker() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return "local"


def _predictor(options: TaskOptions, spec: RuntimeSpec):
    from ..runtime import default_cache

    return runtime().predictor(spec, default_cache(options.cache_dir, disk=options.disk_cache))


def _session(item: Item, options: TaskOptions, spec: RuntimeSpec):
    """The image of `item` in the verbs' frame, in a Session (as `embed` and `auto` open it)."""
    from ..session import Session
    from ..volume import open_image

    data = open_image(item.path, options.plane)
    session = Session(_predictor(options, spec), preset=options.preset)
    session.set_image(data.data, is_volume=data.is_volume)
    return data, session


# ---- the three tasks ---------------------------------------------------------------------
def embed_item(item: Item, options: TaskOptions, spec: RuntimeSpec) -> dict:
    """`napari-medsam embed`: every slice's embedding into the on-disk cache."""
    _, session = _session(item, options, spec)
    computed = sum(int(new) for *_, new in session.embedding())
    predictor = session.predictor
    outputs = [str(predictor.cache.file(predictor.image_key(session.slice_image(z),
                                                            session.preset, session.bounds)))
               for z in range(session.n_slices)]
    return {"outputs": outputs, "slices": session.n_slices, "computed": computed}


def auto_item(item: Item, options: TaskOptions, spec: RuntimeSpec) -> dict:
    """`napari-medsam auto`: the head on the image, or on the volume as a volume (every slice,
    then each structure made consistent across slices), one label map written."""
    from ..autoseg import load_head

    data, session = _session(item, options, spec)
    head = load_head(options.head, session.predictor)
    if data.is_volume:
        session.auto_volume(head, options.mode)
    else:
        session.auto(head, mode=options.mode, commit=True)
    out = data.write_labels(label_path(item, options, data.is_volume), session.labels)
    counts = {name: int((session.labels == v).sum())
              for v, name in zip(head.structures, head.names, strict=True)}
    return {"outputs": [str(out)], "slices": session.n_slices, "pixels": counts}


def eval_item(item: Item, options: TaskOptions, spec: RuntimeSpec) -> dict:
    """`napari-medsam eval` on one manifest pair: its records (merged in manifest order)."""
    from ..click_eval import evaluate_clicks
    from ..evaluation import evaluate_boxes, pair_targets

    if not item.pair or not item.data_dir:
        raise InputError(f"{item.rel} has no ground truth: batch eval runs over a manifest.")
    predictor = _predictor(options, spec)
    targets = pair_targets(item.data_dir, item.as_pair(), options.max_slices)
    if options.prompt == "box":
        records = evaluate_boxes(predictor, targets)
    else:
        records = evaluate_clicks(predictor, targets, with_box=options.prompt == "box+clicks",
                                  max_clicks=options.max_clicks)
    return {"records": records}


RUNNERS = {"embed": embed_item, "auto": auto_item, "eval": eval_item}


def label_path(item: Item, options: TaskOptions, is_volume: bool) -> Path:
    """Where `auto` writes an item's label map: <output>/labels/<rel> (or beside the input as
    <name>.medsam-<head>), .nii.gz for volumes and NIfTI / DICOM inputs (geometry kept),
    else .png."""
    source = Path(item.path)
    keep_geometry = is_volume or source.is_dir() or _suffix(source) in NIFTI_SUFFIXES
    suffix = ".nii.gz" if keep_geometry else ".png"
    name = source.name[: len(source.name) - len(_suffix(source))] if source.is_file() \
        else source.name
    if options.beside:
        return source.parent / f"{name}{OUTPUT_MARK}{Path(str(options.head)).name}{suffix}"
    rel = Path(item.rel)
    return Path(options.output) / "labels" / rel.parent / f"{name}{suffix}"
