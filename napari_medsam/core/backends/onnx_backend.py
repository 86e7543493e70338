"""The onnxruntime backend: exported encoder + decoder, numpy only (torch is never imported here).

Session settings: all graph optimisations, one intra-op thread per core (override with
$NAPARI_MEDSAM_THREADS), sequential execution, and no spin-waiting between runs so an idle
annotation tool does not burn the laptop's CPU. On x86 CPUs without VNNI, int8 products run on
onnxruntime's exact kernels (`int8_needs_exact_kernels`).
"""

from __future__ import annotations

import logging
import os
import platform
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import MedSAMError
from ..routing import ADAPTER, BASE, Route, choose_decoder
from .base import OUTSIDE_LOGIT, Backend, prompt_count
from .preprocess import prepare_input
from .weights import ModelInfo

log = logging.getLogger(__name__)
UP = 4  # low-res logit pixels per embedding cell (256 / 64)


def default_threads() -> int:
    """Threads per session: $NAPARI_MEDSAM_THREADS, else the CPUs this process may use."""
    env = os.environ.get("NAPARI_MEDSAM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS / Windows
        return max(1, os.cpu_count() or 1)


@lru_cache(maxsize=1)
def int8_needs_exact_kernels() -> bool:
    """True on x86 CPUs without VNNI (AVX2 only, AVX-512 before Cascade Lake, AMD before Zen 4).

    There onnxruntime's fast int8 products sum pairs in 16 bits, which saturate with signed
    weights: measured on an AMD EPYC without VNNI, the int8 decoder's box masks agreed 0.96 with
    torch instead of >= 0.99. onnxruntime's `session.x64quantprecision` switches to its exact
    kernels, documented as slower; with VNNI the fast kernels are exact, so it stays off there.
    Unknown CPUs (no /proc/cpuinfo) get the exact kernels: a wrong mask costs more than time.
    """
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return False
    try:
        return lacks_vnni(Path("/proc/cpuinfo").read_text(errors="ignore"))
    except OSError:
        return True


def lacks_vnni(cpuinfo: str) -> bool:
    """Linux's /proc/cpuinfo text names no VNNI extension (or no flags at all)."""
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines()
                  if line.startswith("flags")), None)
    return flags is None or not {"avx512_vnni", "avx_vnni"} & set(flags)


def session_options(threads: int | None = None, lean: bool = False):
    """onnxruntime SessionOptions tuned for interactive CPU use.

    Args:
        lean: no pre-planned memory pattern and no buffer reuse plan; the arena then recycles
            freed activations. Measured on the encoder: peak memory of one embedding +130 MiB
            instead of +300 MiB, and no slower (0.95 s vs 0.99 s on one core).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if lean:
        opts.enable_mem_pattern = False
        opts.enable_mem_reuse = False
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads or default_threads()
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if int8_needs_exact_kernels():
        opts.add_session_config_entry("session.x64quantprecision", "1")
    opts.log_severity_level = 3
    return opts


def open_session(path: str | Path, threads: int | None = None, lean: bool = False):
    """An InferenceSession on the CPU, with a plain-words error for a damaged file."""
    import onnxruntime as ort

    try:
        return ort.InferenceSession(
            str(path), session_options(threads, lean), providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own exception types
        raise MedSAMError(
            f"The exported model {path} could not be opened ({type(exc).__name__}). Delete it; "
            "it will be exported again (or run: napari-medsam export)."
        ) from exc


def no_dense_prompt(n: int) -> dict[str, np.ndarray]:
    """The decoder inputs of a click or box prompt: no dense prompt, no extra tokens."""
    return {"dense_prompt": np.zeros((1, 256, 1, 1), np.float32),
            "use_dense": np.zeros(n, np.float32),
            "extra_tokens": np.zeros((n, 0, 256), np.float32)}


def pack_prompts(coords, labels, boxes, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Points and box corners as the decoder's (N, K, 2) coords and (N, K) labels.

    Mirrors segment_anything's PromptEncoder: a padding point (label -1) when there is no box,
    box corners as labels 2 and 3 after the clicks.
    """
    parts_c, parts_l = [], []
    if coords is not None:
        c = np.asarray(coords, dtype=np.float32)
        lab = np.asarray(labels, dtype=np.float32)
        parts_c.append(np.broadcast_to(c, (n, *c.shape[1:])))
        parts_l.append(np.broadcast_to(lab, (n, lab.shape[1])))
    if boxes is None:
        parts_c.append(np.zeros((n, 1, 2), np.float32))
        parts_l.append(np.full((n, 1), -1.0, np.float32))
    else:
        parts_c.append(np.asarray(boxes, dtype=np.float32).reshape(n, 2, 2))
        parts_l.append(np.tile(np.array([[2.0, 3.0]], np.float32), (n, 1)))
    return np.concatenate(parts_c, axis=1), np.concatenate(parts_l, axis=1)


def region_cells(
    coords, boxes, margin: float, cell: float, side: int = 64, min_cells: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Embedding rows/cols around the boxes (and clicks), grown by `margin` x the box size and
    widened (centred) to at least `min_cells` per side.

    `cell` is the size of one embedding cell in encoder-input pixels (256 / 64 for LiteMedSAM).
    """
    pts = np.asarray(boxes, dtype=np.float64).reshape(-1, 2)
    if coords is not None:
        pts = np.concatenate([pts, np.asarray(coords, dtype=np.float64).reshape(-1, 2)])
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    grow = margin * (hi - lo).max() + 2 * cell
    (x0, y0), (x1, y1) = (lo - grow) / cell, (hi + grow) / cell
    rows = _widen(max(int(y0), 0), min(int(np.ceil(y1)) + 1, side), min_cells, side)
    cols = _widen(max(int(x0), 0), min(int(np.ceil(x1)) + 1, side), min_cells, side)
    return rows, cols


def _widen(lo: int, hi: int, size: int, side: int) -> np.ndarray:
    """The range lo..hi-1 grown evenly on both sides to `size` cells, kept inside 0..side-1."""
    if hi - lo < size:
        lo = max(0, min(lo - (size - (hi - lo)) // 2, side - size))
        hi = min(side, lo + size)
    return np.arange(lo, hi, dtype=np.int64)


def _cover(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The smallest contiguous range holding both ranges (the context must hold the region)."""
    return np.arange(min(outer[0], inner[0]), max(outer[-1], inner[-1]) + 1, dtype=np.int64)


class OnnxBackend(Backend):
    """Runs exported ONNX models with onnxruntime on the CPU.

    Args:
        encoder_path: exported encoder (see `backends.export`).
        decoders: exported decoder per `routing` choice (ADAPTER, BASE, FALLBACK) that the
            route can pick; a model without adapter has only BASE.
        info: the model they were exported from.
        route: which decoder answers which prompt (`routing.choose_decoder`).
        gate: the active adapter's `DomainGate` when the route is gated.
        decoder_infos: the ModelInfo of each decoder (to export its multimask form on use).
        encoder_variant: "fp32", "int8" or "bf16" (decides the embedding cache id).
        decoder_variant: "fp32" or "int8" (for `describe`).
        roi_margin: None decodes the whole image (exact); a number decodes only the box region
            grown by that fraction of the box size (`balanced`, `fast`) when a box is given.
        context: None runs every image token through the transformer (exact); (margin, cells)
            pauses the tokens outside the box grown by margin x its size and widened to at least
            `cells` per side (token pausing; needs `roi_margin`; no profile uses it).
        threads: intra-op threads (default: `default_threads()`).
        encoder_engine: "onnxruntime", or "openvino" (`encoder_openvino`; fp32 or bf16).
    """

    name = "onnxruntime"

    def __init__(
        self,
        encoder_path: str | Path,
        decoders: dict[str, str | Path],
        info: ModelInfo,
        route: Route | None = None,
        gate=None,
        decoder_infos: dict[str, ModelInfo] | None = None,
        encoder_variant: str = "fp32",
        decoder_variant: str = "fp32",
        roi_margin: float | None = None,
        threads: int | None = None,
        encoder_engine: str = "onnxruntime",
        context: tuple[float, int] | None = None,
    ):
        self._info = info
        self.route = route or Route()
        self.encoder_path = Path(encoder_path)
        self.decoders = {k: Path(v) for k, v in decoders.items()}
        self.decoder_infos = dict(decoder_infos or {})
        self.gate = gate if self.route.gated else None
        self.encoder_variant = encoder_variant
        self.encoder_engine = encoder_engine
        self.decoder_variant = decoder_variant
        self.roi_margin = roi_margin
        self.context = context if roi_margin is not None else None
        self.threads = threads
        self.last_gate: tuple[float, bool] | None = None  # (distance, adapter used)
        missing = self.route.decoders() - set(self.decoders)
        if missing:
            raise MedSAMError(f"No exported decoder for {', '.join(sorted(missing))}: run "
                              "napari-medsam export.")
        for path in (self.encoder_path, *self.decoders.values()):
            if not path.is_file():
                raise MedSAMError(f"Exported model {path} is missing: run napari-medsam export.")
        # sessions open on first use: a cached embedding needs no encoder, and opening the
        # decoder after the first encoding keeps it out of the encoder's memory peak
        self._sessions: dict[str, object] = {}
        self._model = None

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def decoder_path(self) -> Path:
        """The decoder of clicks on an accepted image (the adapter's, else the base model's)."""
        return self.decoders[ADAPTER if self.route.adapter else BASE]

    @property
    def model(self):
        """The torch `SamModel` (loaded on first access, importing torch): for adapters only."""
        if self._model is None:
            from .export import load_torch_model

            log.info("Loading the torch model next to the ONNX backend (imports torch).")
            self._model = load_torch_model(self._info)
        return self._model

    def _session(self, key: str, path: Path, lean: bool = False):
        if key not in self._sessions:
            self._sessions[key] = open_session(path, self.threads, lean)
        return self._sessions[key]

    def _encoder(self):
        if self.encoder_engine != "openvino":
            return self._session("encoder", self.encoder_path, lean=True)
        if "encoder" not in self._sessions:
            from .encoder_openvino import OpenVinoEncoder

            self._sessions["encoder"] = OpenVinoEncoder(
                self.encoder_path, "bf16" if self.encoder_variant == "bf16" else "fp32",
                self.threads or default_threads())
        return self._sessions["encoder"]

    def warm(self) -> None:
        """Open the encoder (OpenVINO compiles it here) and the decoders, and run each once on a
        blank image (the first run of a session allocates its buffers), now rather than on the
        first image: a front end calls it before anyone uses this backend, off the UI thread."""
        features, _ = self.encode(np.zeros((64, 64, 3), np.float32))
        features = self.load_features(features)
        for choice, path in self.decoders.items():
            self._session(choice, path)
        box = np.array([[8.0, 8.0, 40.0, 40.0]])
        self.decode(features, None, None, box, None)  # the box decoder
        self.decode(features, np.array([[[24.0, 24.0]]]), np.array([[1]]), None, None)  # clicks
        self.last_gate = None

    def encode(self, image01: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        x, resized = prepare_input(image01, self.image_size, self._info.normalization)
        if self.encoder_engine == "openvino":
            features = self._encoder().run(x)
        else:
            (features,) = self._encoder().run(None, {"image": x})
        return np.asarray(features[0], dtype=np.float32), resized

    def decode(self, features, coords, labels, boxes, mask_input, multimask=False):
        n = prompt_count(coords, boxes, mask_input)
        point_coords, point_labels = pack_prompts(coords, labels, boxes, n)
        side = features.shape[-1]
        if mask_input is None:  # a 4 x 4 dummy: multiplied by has_mask = 0 (see decoder_onnx)
            masks = np.zeros((n, 1, 4, 4), np.float32)
            has_mask = np.zeros(n, np.float32)
        else:
            masks = np.ascontiguousarray(np.broadcast_to(mask_input, (n, *mask_input.shape[1:])))
            has_mask = np.ones(n, np.float32)
        full = np.arange(side, dtype=np.int64)
        rows = cols = ctx_rows = ctx_cols = full
        if self.roi_margin is not None and boxes is not None and not multimask:
            cell = self.image_size / side
            rows, cols = region_cells(coords, boxes, self.roi_margin, cell, side)
            if self.context is not None:
                ctx_rows, ctx_cols = region_cells(coords, boxes, self.context[0], cell, side,
                                                  min_cells=self.context[1])
                ctx_rows, ctx_cols = _cover(ctx_rows, rows), _cover(ctx_cols, cols)
        feeds = {
            "image_embeddings": features,
            "point_coords": point_coords,
            "point_labels": point_labels,
            "mask_input": masks.astype(np.float32, copy=False),
            "has_mask_input": has_mask,
            "roi_rows": rows,
            "roi_cols": cols,
            "ctx_rows": ctx_rows,
            "ctx_cols": ctx_cols,
            **no_dense_prompt(n),
        }
        choice = choose_decoder(self.route, coords is not None, self._gate_verdict(features))
        if multimask:
            session = self._multimask_session(choice)
        else:
            session = self._session(choice, self.decoders[choice])
        logits, iou = session.run(None, feeds)
        if multimask:
            best = iou.argmax(axis=1)
            logits, iou = logits[np.arange(n), best][:, None], iou[np.arange(n), best][:, None]
        if len(rows) != side or len(cols) != side:
            canvas = np.full((n, 1, UP * side, UP * side), OUTSIDE_LOGIT, np.float32)
            canvas[:, :, UP * rows[0] : UP * (rows[-1] + 1), UP * cols[0] : UP * (cols[-1] + 1)] = (
                logits)
            logits = canvas
        return logits, iou[:, 0].astype(np.float32)

    def decode_dense(self, features, dense: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """The base decoder (fp32) on dense prompts (S, 256, 64, 64) and query tokens
        (S, T, 256) with no point: what the automatic heads decode with. (S, 256, 256) logits."""
        if "dense" not in self._sessions:
            from .export import ensure_decoder

            path = ensure_decoder(self._info.base, "fp32", folder=self.decoder_path.parent)
            self._sessions["dense"] = open_session(path, self.threads)
        n, side = len(dense), features.shape[-1]
        full = np.arange(side, dtype=np.int64)
        feeds = {
            "image_embeddings": features,
            "point_coords": np.zeros((n, 0, 2), np.float32),
            "point_labels": np.zeros((n, 0), np.float32),
            "mask_input": np.zeros((n, 1, 4, 4), np.float32),
            "has_mask_input": np.zeros(n, np.float32),
            "roi_rows": full, "roi_cols": full, "ctx_rows": full, "ctx_cols": full,
            "dense_prompt": np.ascontiguousarray(dense, dtype=np.float32),
            "use_dense": np.ones(n, np.float32),
            "extra_tokens": np.ascontiguousarray(tokens, dtype=np.float32),
        }
        logits, _ = self._sessions["dense"].run(None, feeds)
        return logits[:, 0]

    def _gate_verdict(self, features) -> bool | None:
        if self.gate is None:
            self.last_gate = None
            return None
        self.last_gate = self.gate.check(features)
        return self.last_gate[1]

    def _multimask_session(self, choice: str):
        """The three-candidate decoder of `choice`, exported on first use (imports torch once)."""
        key = f"multi-{choice}"
        if key not in self._sessions:
            from .export import ensure_decoder

            info = self.decoder_infos.get(choice) or (
                self._info if choice == ADAPTER else self._info.base)
            path = ensure_decoder(info, self.decoder_variant, multimask=True,
                                  folder=self.decoders[choice].parent)
            self._sessions[key] = open_session(path, self.threads)
        return self._sessions[key]

    def describe(self) -> str:
        region = ", box-region decoding" if self.roi_margin is not None else ""
        region += ", token pausing" if self.context is not None else ""
        engine = " on OpenVINO" if self.encoder_engine == "openvino" else ""
        return (f"onnxruntime on CPU ({self.encoder_variant} encoder{engine}, "
                f"{self.decoder_variant} decoder{region}, {self.threads or default_threads()} "
                "threads)")
