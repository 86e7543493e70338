"""The torch side of running a head: load its module, run it with the torch decoder, export it.

Imported only where torch is there (training, the torch backend, `scripts/export_onnx.py`); the
ONNX path runs a head's `head.onnx` with onnxruntime and decodes with the exported base decoder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..atomic import atomic_folder, atomic_write_path
from ..errors import CheckpointError
from ..storage import write_metadata
from .decoding import decode_heads
from .heads import build_head, count_parameters
from .store import FORMAT, ONNX_FILE, WEIGHTS_FILE


def load_module(folder: Path, metadata: dict, device="cpu") -> torch.nn.Module:
    """The head's nn.Module from its safetensors file; a damaged file is a CheckpointError."""
    try:
        module = build_head(metadata["config"])
        module.load_state_dict(load_file(str(Path(folder) / WEIGHTS_FILE)), strict=True)
    except Exception as exc:  # safetensors, torch and OS errors alike: the file is unusable
        raise CheckpointError(f"The head in {folder} is damaged or incomplete ({exc}); "
                              "train it again or reinstall the package.") from exc
    return module.to(device).eval()


@torch.no_grad()
def run(module: torch.nn.Module, model, features) -> tuple[np.ndarray, np.ndarray]:
    """(head logits (S, g, g), decoder logits (S, 256, 256)) on one embedding."""
    feats = torch.as_tensor(features).float().to(model.device)
    module = module.to(model.device).eval()
    out = module(feats)
    dense = decode_heads(model, feats, out)[0]
    return out.lowres[0].float().cpu().numpy(), dense.float().cpu().numpy()


class _Exportable(torch.nn.Module):
    """embedding -> (head logits, dense prompts, query tokens), for ONNX."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module

    def forward(self, embedding):
        out = self.module(embedding)
        return out.lowres, out.dense, out.tokens


def export_onnx(module: torch.nn.Module, path: str | Path) -> Path:
    """Write the head as ONNX (the decoder is not in it: the exported base decoder decodes its
    prompts, `OnnxBackend.decode_dense`)."""
    import warnings

    wrapper = _Exportable(module.cpu().float().eval())

    def write(tmp: Path) -> None:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapper, (torch.zeros(1, 256, 64, 64),), str(tmp),
                              input_names=["embedding"],
                              output_names=["head_logits", "dense_prompts", "query_tokens"],
                              opset_version=17, dynamo=False)

    return atomic_write_path(path, write)


def save_head(folder: str | Path, head: torch.nn.Module, model, metadata: dict) -> Path:
    """Write a head folder atomically (safetensors weights, its ONNX form, metadata.json); a
    previous head there is replaced only once all is written.

    Args:
        head: a PatchPromptHead or ShapeExpertHead.
        model: the base SamModel it was trained on (its id and weights hash are recorded).
        metadata: structures, names, training size, validation Dice, mode... (JSON values).
    """
    folder = Path(folder)
    state = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    with atomic_folder(folder) as tmp:
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": FORMAT})
        export_onnx(head, tmp / ONNX_FILE)
        write_metadata(tmp, {
            **metadata,
            "format": FORMAT,
            "kind": head.config["kind"],
            "config": head.config,
            "parameters": count_parameters(head),
            "base_model": model.model_id,
            "base_model_sha256": model.weights_sha256,
        })
    return folder
