"""Run the exported ONNX image encoder with OpenVINO (optional extra: napari-medsam[openvino]).

OpenVINO compiles the same ONNX file for the CPU it runs on. Measured on this project's 2-core
AMD EPYC (AVX-512 BF16), LiteMedSAM encoder per 256 x 256 slice: onnxruntime fp32 658 ms,
OpenVINO fp32 516 ms (the same embedding, relative error 3e-6), OpenVINO bf16 289 ms (relative
error 0.04, like dynamic int8's 0.045). The decoder gains nothing from it and stays on
onnxruntime. Like the rest of the ONNX path, this never imports torch.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import MedSAMError
from ..storage import env_switch


def available() -> bool:
    """True when the openvino package is installed and not switched off with
    $NAPARI_MEDSAM_OPENVINO=0 (the profiles then use onnxruntime only)."""
    return env_switch("NAPARI_MEDSAM_OPENVINO") and importlib.util.find_spec("openvino") is not None


@lru_cache(maxsize=1)
def bf16_supported() -> bool:
    """True when OpenVINO reports native bf16 on this CPU (AVX512-BF16 or AMX)."""
    if not available():
        return False
    try:
        import openvino as ov

        return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # an OpenVINO that cannot see the CPU: use onnxruntime
        return False


class OpenVinoEncoder:
    """The ONNX encoder compiled by OpenVINO for the CPU.

    Args:
        path: the exported fp32 encoder (`backends.export.ensure_encoder`).
        precision: "fp32" or "bf16" (OpenVINO's inference precision).
        threads: CPU threads for one inference.
    """

    def __init__(self, path: str | Path, precision: str = "fp32", threads: int = 1):
        import openvino as ov

        if precision not in ("fp32", "bf16"):
            raise MedSAMError(f"OpenVINO precision must be fp32 or bf16, not '{precision}'.")
        config = {
            "INFERENCE_PRECISION_HINT": "f32" if precision == "fp32" else "bf16",
            "INFERENCE_NUM_THREADS": int(threads),
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
        }
        try:
            self._compiled = ov.Core().compile_model(str(path), "CPU", config)
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses of its own
            raise MedSAMError(
                f"OpenVINO could not compile the exported encoder {path} ({type(exc).__name__}). "
                "Delete the file to export it again, or choose the 'accurate' profile."
            ) from exc
        self._request = self._compiled.create_infer_request()
        self._output = self._compiled.output(0)
        self.precision = precision

    def run(self, image: np.ndarray) -> np.ndarray:
        """(1, 3, S, S) float32 input -> (1, 256, 64, 64) float32 embedding."""
        result = self._request.infer({0: np.ascontiguousarray(image, dtype=np.float32)})
        return np.asarray(result[self._output], dtype=np.float32)
