"""int8 quantization of the exported models with onnxruntime's quantization tools.

Only linear layers (MatMul with a weight: about half of the encoder's time) are quantized;
convolutions and attention products stay fp32. Measured on this project's 2-core CPU (mean
relative error of the embedding on dev images; speed-up of the encoder vs fp32 ONNX, 1 thread):
  * "int8" (the `fast` profile where OpenVINO bf16 is not available): dynamic int8 (per-channel
    weights, activations quantized at run time from their actual range) of every linear layer
    except the MLPs' second one, whose input (after GELU) is the hardest to quantize: error
    0.045, 1.4x. Box-mask agreement with torch
    fp32 >= 0.98 on every dev dataset.
  * "int8-all": the same on every linear layer: error 0.076, 1.5x; agreement 0.95 on DeepLesion.
  * "int8-static": QDQ with activation ranges calibrated on real training images (99.99th
    percentile of 32 images; MinMax gave 0.118): error 0.105, 1.45x. Worse than dynamic here.
  * int8 convolutions (static): slower than fp32 in onnxruntime and cosine 0.58: not offered.
The decoder uses dynamic int8 on all its linear layers.

The calibration ranges measured on /work/shared/train (CAMUS echo + PH2 dermoscopy) ship in
`napari_medsam/resources/calibration/`, so exporting needs no images; a folder of the user's own
images can be given instead (`napari-medsam export --calibration-dir`).
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

import numpy as np

from ..errors import MedSAMError
from .weights import ModelInfo

log = logging.getLogger(__name__)
CALIBRATION_IMAGES = 32
PERCENTILE = 99.99
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


@contextlib.contextmanager
def _quiet():
    """onnxruntime's quantizer logs advice on the root logger; keep it out of the user's way."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def shipped_ranges(info: ModelInfo) -> Path:
    """Where the shipped calibration ranges for these weights live (may not exist)."""
    root = Path(__file__).resolve().parents[2] / "resources" / "calibration"
    return root / f"{info.kind}-{info.weights_sha256[:16]}-encoder-ranges.json"


# the second linear layer of the MLPs (TinyViT "fc2", SAM ViT "lin2"): input after GELU
MLP_OUT = ("/fc2/", "/lin2/")


def weight_matmuls(model, skip: tuple[str, ...] = ()) -> list[str]:
    """Names of MatMul nodes whose second input is a weight, minus names containing `skip`."""
    weights = {t.name for t in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type == "MatMul"
            and n.input[1] in weights and not any(part in n.name for part in skip)]


def calibration_inputs(folder: str | Path, info: ModelInfo, count: int = CALIBRATION_IMAGES,
                       seed: int = 0) -> list[np.ndarray]:
    """Encoder inputs from up to `count` images of a folder (its manifest.json when present).

    Images are spread over the folder's datasets (one per patient/case first) and prepared
    exactly as for inference (intensity preset "auto", resize, pad).
    """
    from ..intensity import get_preset
    from ..io import read_image
    from .preprocess import prepare_input

    folder = Path(folder)
    manifest = folder / "manifest.json"
    if manifest.is_file():
        pairs = json.loads(manifest.read_text())["pairs"]
        paths = [folder / p["image"] for p in pairs if Path(p["image"]).suffix in IMAGE_SUFFIXES]
        groups: dict[str, list[Path]] = {}
        for p, path in zip(pairs, paths, strict=False):
            groups.setdefault(p.get("dataset", ""), []).append(path)
    else:
        groups = {"": sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)}
    if not any(groups.values()):
        raise MedSAMError(f"No images (PNG, JPEG, TIFF, BMP) found in {folder} to calibrate on.")
    rng = np.random.default_rng(seed)
    per_group = max(1, count // len(groups))
    chosen: list[Path] = []
    for paths in groups.values():
        take = rng.choice(len(paths), min(per_group, len(paths)), replace=False)
        chosen += [paths[i] for i in sorted(take)]
    preset = get_preset("auto")
    out = []
    for path in chosen[:count]:
        unit = preset.apply(np.asarray(read_image(path).data))
        unit = np.repeat(unit[..., None], 3, axis=2) if unit.ndim == 2 else unit
        out.append(prepare_input(unit, info.image_size, info.normalization)[0])
    return out


def measure_ranges(fp32_path: str | Path, inputs: list[np.ndarray], tensors: list[str],
                   percentile: float = PERCENTILE, samples: int = 200_000, seed: int = 0
                   ) -> dict[str, tuple[float, float]]:
    """Activation ranges of `tensors` over the calibration inputs: the `percentile` and
    100 - `percentile` of a pooled sample of their values plus each image's extremes.

    Measured on the encoder (relative embedding error): plain MinMax 0.118, this 0.105, a pure
    99.99th percentile of the sample 0.18 (clipping the rare large activations hurts most).
    """
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(fp32_path))
    known = {o.name for o in model.graph.output}
    for name in tensors:
        if name not in known:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), opts,
                                   providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    pooled: dict[str, list[np.ndarray]] = {name: [] for name in tensors}
    for x in inputs:
        for name, value in zip(tensors, session.run(tensors, {"image": x}), strict=True):
            flat = value.ravel()
            keep = samples // max(len(inputs), 1)
            pooled[name].append(flat if flat.size <= keep else rng.choice(flat, keep))
            pooled[name].append(np.array([flat.min(), flat.max()]))
    out = {}
    for name, parts in pooled.items():
        values = np.concatenate(parts)
        lo, hi = np.percentile(values, [100.0 - percentile, percentile])
        out[name] = (min(float(lo), 0.0), max(float(hi), 0.0))
    return out


def write_ranges(ranges: dict[str, tuple[float, float]], path: str | Path) -> None:
    """Save ranges in onnxruntime's calibration-cache format (quantize_static reads it)."""
    from onnxruntime.quantization.calibrate import (
        CalibrationMethod,
        TensorsData,
        save_tensors_data,
    )

    data = {k: (np.array(lo, np.float32), np.array(hi, np.float32))
            for k, (lo, hi) in ranges.items()}
    save_tensors_data(TensorsData(CalibrationMethod.MinMax, data), Path(path))
    Path(path).chmod(0o644)


def _check_ranges(path: Path, needed: set[str]) -> bool:
    try:
        data = json.loads(path.read_text())["data"]
    except (OSError, ValueError, KeyError):
        return False
    return needed <= set(data)


def quantize_encoder(fp32_path: str | Path, out_path: str | Path, info: ModelInfo,
                     variant: str = "int8", calibration: str | Path | None = None,
                     save_ranges: str | Path | None = None) -> None:
    """int8 encoder: "int8", "int8-all" (dynamic) or "int8-static" (QDQ, calibrated).

    Args:
        calibration: static only: a folder of images to calibrate on (default: the shipped
            ranges measured on real training images).
        save_ranges: static only: also write the measured ranges there (to ship them).
    """
    if variant in ("int8", "int8-all"):
        quantize_dynamic_int8(fp32_path, out_path, MLP_OUT if variant == "int8" else ())
        return
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    model = onnx.load(str(fp32_path))
    nodes = weight_matmuls(model)
    chosen = [n for n in model.graph.node if n.name in nodes]
    needed = sorted({n.input[0] for n in chosen} | {n.output[0] for n in chosen})
    cache = shipped_ranges(info)
    if calibration is not None:
        ranges = measure_ranges(fp32_path, calibration_inputs(calibration, info), needed)
        cache = Path(save_ranges) if save_ranges else Path(str(out_path) + ".ranges.json")
        write_ranges(ranges, cache)
    elif not _check_ranges(cache, set(needed)):
        raise MedSAMError(
            "No calibration ranges ship for these weights (or they do not fit this export). "
            "Give a folder of your own images: napari-medsam export --calibration-dir FOLDER"
        )
    try:
        with _quiet():
            quantize_static(
                model, str(out_path), None, quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                op_types_to_quantize=["MatMul"], nodes_to_quantize=nodes,
                calibrate_method=CalibrationMethod.MinMax, calibration_cache_path=str(cache),
            )
    except TypeError as exc:  # onnxruntime before calibration caches (2026)
        raise MedSAMError("The static int8 encoder needs a newer onnxruntime "
                          "(pip install -U onnxruntime); the profiles do not need it.") from exc
    if calibration is not None and not save_ranges:
        cache.unlink(missing_ok=True)



def quantize_dynamic_int8(fp32_path: str | Path, out_path: str | Path,
                          skip: tuple[str, ...] = ()) -> None:
    """Dynamic int8: MatMuls with weights (per-channel int8), activations quantized at run time.

    Args:
        skip: leave MatMuls whose name contains one of these in fp32.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(fp32_path))
    with _quiet():
        quantize_dynamic(
            model, str(out_path), op_types_to_quantize=["MatMul"],
            nodes_to_quantize=weight_matmuls(model, skip), per_channel=True,
            weight_type=QuantType.QInt8,
        )
