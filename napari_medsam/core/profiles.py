"""Execution profiles: accurate, balanced, fast, and `auto` (the most accurate within a budget).

In the spirit of TiPE-SAM's resource-aware execution, each profile trades a measured amount of
accuracy for speed (numbers in docs/performance.md, from benchmarks/bench_backends.py):
  * accurate: fp32 ONNX encoder + decoder: the torch fp32 masks, about 2x / 3x faster on a CPU.
  * balanced: fp32 encoder (embeddings shared with torch and `accurate`; run by OpenVINO where
              it is installed), int8 decoder that decodes only the box region at high
              resolution: clicks ~4x faster, box masks >= 0.99 Dice agreement with torch fp32
              on every dev dataset.
  * fast:     bf16 encoder run by OpenVINO on CPUs with native bf16 (AVX512-BF16 / AMX), else
              the int8 encoder (linear layers, dynamic) on onnxruntime; the decoder as balanced
              (encoder ~5.5x faster than torch, box agreement >= 0.96 on every dev dataset).
Which engine a profile gets is settled on this machine by `get_profile`.
`auto` measures what each profile costs on this machine once (cached per machine) and picks the
most accurate one that meets the latency budget.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from .atomic import atomic_text
from .embeddings import default_cache_dir
from .errors import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Profile:
    """How the ONNX backend runs.

    Attributes:
        encoder: "fp32", "int8" (onnxruntime) or "bf16" (OpenVINO).
        decoder: "fp32" or "int8".
        encoder_engine: "onnxruntime" or "openvino".
        roi_margin: None decodes the whole image; a fraction grows the box region that is
            decoded at high resolution (box prompts only).
        context: None runs every image token through the decoder's transformer; (margin,
            cells) pauses the tokens outside the box grown by margin x its size, widened to at
            least `cells` per side (token pausing; box prompts only).
    """

    name: str
    encoder: str
    decoder: str
    roi_margin: float | None
    summary: str
    encoder_engine: str = "onnxruntime"
    context: tuple[float, int] | None = None


PROFILES: dict[str, Profile] = {
    "accurate": Profile("accurate", "fp32", "fp32", None,
                        "fp32 ONNX: the same masks as torch fp32"),
    "balanced": Profile("balanced", "fp32", "int8", 0.25,
                        "fp32 encoder; int8 decoder on the box region"),
    # no token pausing (context): it saved 3-4 ms per box click but broke agreement on cardiac
    # MRI (ACDC 0.945, one target 0.53; GT Dice -2.8 points); without it every dev dataset
    # agrees >= 0.96 (docs/performance.md, issue 20)
    "fast": Profile("fast", "int8", "int8", 0.25,
                    "int8 encoder and decoder; box region only"),
}
ORDER = ("accurate", "balanced", "fast")  # most accurate first
CHOICES = ("auto", "torch", *ORDER)


@dataclass(frozen=True)
class Budget:
    """Latency budget for `auto`: one click and one slice embedding, in milliseconds."""

    click_ms: float = 60.0
    encode_ms: float = 1500.0


@dataclass
class Cost:
    """Measured median latency of one profile on this machine."""

    profile: str
    encode_ms: float
    click_ms: float
    threads: int


def get_profile(name: str) -> Profile:
    """The profile called `name` (accurate, balanced or fast), as it runs on this machine:
    where OpenVINO is installed, `balanced` runs the fp32 encoder on it (the same embedding to
    1e-6; 398 vs 585-660 ms per slice on 2 idle cores, 385 MiB peak for a CLI run) and `fast` a
    bf16 encoder when the CPU has native bf16 (else the int8 encoder on onnxruntime).
    `accurate` stays on onnxruntime: the torch fp32 masks, and no OpenVINO compile (~0.8 s) in a
    cold start."""
    from .backends import encoder_openvino as ov

    key = (name or "").strip().lower()
    if key not in PROFILES:
        raise InputError(f"Unknown profile '{name}'. Choose one of: {', '.join(CHOICES)}.")
    profile = PROFILES[key]
    if key == "balanced" and ov.available():
        return replace(profile, encoder_engine="openvino",
                       summary="fp32 encoder on OpenVINO; int8 decoder on the box region")
    if key == "fast" and ov.bf16_supported():
        return replace(profile, encoder="bf16", encoder_engine="openvino",
                       summary="bf16 encoder on OpenVINO; int8 decoder on the box region")
    return profile


def machine_key(info, threads: int) -> str:
    """What a measured cost depends on: CPU, threads, onnxruntime/OpenVINO versions, weights."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "none"

    cpu = platform.processor() or platform.machine()
    return f"{platform.node()}|{cpu}|{os.cpu_count()}|{threads}|{installed('onnxruntime')}|" \
           f"ov{installed('openvino')}|{info.weights_sha256[:16]}"


def _costs_file() -> Path:
    return default_cache_dir() / "profile-costs.json"


def _synthetic_image(side: int = 256) -> np.ndarray:
    """A smooth image with a bright disc: cost does not depend on content, only on size."""
    yy, xx = np.mgrid[0:side, 0:side] / side
    disc = ((yy - 0.5) ** 2 + (xx - 0.45) ** 2 < 0.05).astype(np.float32)
    image = (0.3 * yy + 0.2 * xx + 0.5 * disc).astype(np.float32)
    return np.repeat(image[..., None], 3, axis=2)


def measure(backend, repeats: int = 3) -> tuple[float, float]:
    """Median encode and click (decode + mask) latency of a backend, in ms."""
    from .backends.preprocess import mask_from_logits

    image = _synthetic_image(backend.image_size)
    backend.encode(image)  # warm-up (opens the session)
    enc = []
    for _ in range(repeats):
        start = time.perf_counter()
        features, resized = backend.encode(image)
        enc.append(time.perf_counter() - start)
    handle = backend.load_features(features)
    box = np.array([[60.0, 50.0, 180.0, 170.0]])
    clicks = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        logits, _ = backend.decode(handle, None, None, box, None)
        mask_from_logits(logits, backend.image_size, resized, resized)
        if i:
            clicks.append(time.perf_counter() - start)
    return 1000 * float(np.median(enc)), 1000 * float(np.median(clicks))


def shipped_costs(threads: int) -> dict[str, Cost]:
    """The costs measured when the package was made (resources/profile_costs.json: 2 threads of
    an AMD EPYC with AVX-512), scaled to `threads`: what `auto` uses until `napari-medsam bench`
    measures this machine, so a first run never pays for a benchmark."""
    table = json.loads((Path(__file__).resolve().parents[1] / "resources" /
                        "profile_costs.json").read_text())
    scale = (table["threads"] / max(threads, 1)) ** 0.8  # two cores do not halve the time
    return {name: Cost(name, round(c["encode_ms"] * scale, 1), round(c["click_ms"] * scale, 1),
                       threads) for name, c in table["costs"].items()}


def profile_costs(info, threads: int | None = None, remeasure: bool = False,
                  folder=None, repeats: int = 3, measure_missing: bool = True
                  ) -> dict[str, Cost]:
    """Cost of every profile on this machine: measured once and kept in the user cache.

    Args:
        remeasure: measure again even when a measurement is kept.
        measure_missing: when nothing is kept yet, measure (False: the shipped costs, no
            benchmark).
    """
    from .backends.onnx_backend import default_threads

    threads = threads or default_threads()
    key = machine_key(info, threads)
    path = _costs_file()
    stored = {}
    if path.is_file():
        try:
            stored = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            stored = {}
    if not remeasure and key in stored:
        return {k: Cost(**v) for k, v in stored[key].items()}
    if not measure_missing and not remeasure:
        return shipped_costs(threads)
    from .backends import onnx_backend_for

    costs = {}
    for name in ORDER:
        backend = onnx_backend_for(get_profile(name), info, folder=folder, threads=threads)
        enc, click = measure(backend, repeats)
        costs[name] = Cost(name, round(enc, 1), round(click, 1), threads)
        log.info("profile %s: encode %.0f ms, click %.1f ms", name, enc, click)
    stored[key] = {k: asdict(v) for k, v in costs.items()}
    try:
        atomic_text(path, json.dumps(stored, indent=1))
    except OSError as exc:
        log.warning("Could not store profile costs in %s (%s).", path, exc)
    return costs


def choose_auto(costs: dict[str, Cost], budget: Budget | None = None) -> str:
    """The most accurate profile whose measured costs fit the budget (else the fastest)."""
    budget = budget or Budget()
    for name in ORDER:
        cost = costs.get(name)
        if cost and cost.click_ms <= budget.click_ms and cost.encode_ms <= budget.encode_ms:
            return name
    return ORDER[-1]
