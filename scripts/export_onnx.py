"""Regenerate the ONNX models shipped in the package, or check them against a fresh export.

    python scripts/export_onnx.py           # writes napari_medsam/resources/onnx/ + head.onnx
    python scripts/export_onnx.py --check   # exports afresh to a temporary folder and compares

The light install (`pip install napari-medsam`, no torch) runs the built-in model from these
files: the encoder (fp32 and the dynamic int8 form of the `fast` profile on CPUs without bf16),
the base decoder (box prompts, and the automatic heads' prompts) and the click-adapter decoder,
each in fp32 and int8 (`balanced` / `fast`), and every shipped head's `head.onnx`.
`manifest.json` records the sha256 of each file, the LiteMedSAM weights they come from, the
export versions and the tool versions. Needs torch (`pip install -e '.[dev]'`).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from napari_medsam.core.atomic import atomic_text  # noqa: E402
from napari_medsam.core.autoseg.store import ONNX_FILE, list_heads  # noqa: E402
from napari_medsam.core.backends import export as ex  # noqa: E402
from napari_medsam.core.backends.onnx_backend import no_dense_prompt, open_session  # noqa: E402
from napari_medsam.core.backends.weights import ModelInfo  # noqa: E402
from napari_medsam.core.checkpoints import file_sha256, shipped_onnx_dir  # noqa: E402
from napari_medsam.core.runtime import RuntimeSpec, load_torch  # noqa: E402


def export_all(folder: Path) -> dict:
    """Export the shipped set into `folder`; returns the manifest (also written there)."""
    import onnx
    import onnxruntime
    import torch

    from napari_medsam.core.autoseg.torch_run import export_onnx, load_module
    from napari_medsam.core.storage import read_metadata

    model = load_torch(RuntimeSpec(device="cpu"))  # LiteMedSAM + the shipped click adapter
    click = ModelInfo.from_model(model)
    files = [ex.ensure_encoder(click, "fp32", folder, model),
             ex.ensure_encoder(click, "int8", folder, model),
             ex.ensure_decoder(click.base, "fp32", folder=folder, model=model),
             ex.ensure_decoder(click, "fp32", folder=folder, model=model),
             ex.ensure_decoder(click.base, "int8", folder=folder, model=model),
             ex.ensure_decoder(click, "int8", folder=folder, model=model)]
    heads = {}
    for name, head_dir in list_heads().items():
        module = load_module(head_dir, read_metadata(head_dir))
        heads[name] = export_onnx(module, folder / f"{name}-{ONNX_FILE}")
    manifest = {
        "model": "litemedsam",
        "weights_sha256": click.weights_sha256,
        "click_adapter_tag": click.decoder_tag,
        "export_version": ex.EXPORT_VERSION,
        "decoder_export_version": ex.DECODER_EXPORT_VERSION,
        "torch": torch.__version__, "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "files": {p.name: file_sha256(p) for p in files},
        "heads": {name: file_sha256(p) for name, p in heads.items()},
        "command": "python scripts/export_onnx.py",
    }
    atomic_text(folder / "manifest.json", json.dumps(manifest, indent=1, sort_keys=True))
    return manifest


def install(folder: Path, manifest: dict) -> None:
    """Move a fresh export into the package: models to resources/onnx, heads beside theirs."""
    target = shipped_onnx_dir()
    target.mkdir(parents=True, exist_ok=True)
    for old in target.glob("*.onnx"):
        if old.name not in manifest["files"]:
            old.unlink()
    for name in manifest["files"]:
        (folder / name).replace(target / name)
    for name, head_dir in list_heads().items():
        (folder / f"{name}-{ONNX_FILE}").replace(head_dir / ONNX_FILE)
    (folder / "manifest.json").replace(target / "manifest.json")


def outputs(path: Path, kind: str, rng: np.random.Generator) -> list[np.ndarray]:
    """What an exported model computes on fixed random inputs."""
    session = open_session(path, threads=2)
    if kind == "encoder":
        return session.run(None, {"image": rng.random((1, 3, 256, 256), np.float32)})
    feats = (rng.standard_normal((1, 256, 64, 64)) * 0.5).astype(np.float32)
    if kind == "head":
        return session.run(None, {"embedding": feats})
    full = np.arange(64, dtype=np.int64)
    feeds = {"image_embeddings": feats, "point_coords": np.array([[[90, 100], [40, 50]]],
                                                                 np.float32),
             "point_labels": np.array([[1, 0]], np.float32),
             "mask_input": np.zeros((1, 1, 4, 4), np.float32),
             "has_mask_input": np.zeros(1, np.float32), "roi_rows": full, "roi_cols": full,
             "ctx_rows": full, "ctx_cols": full, **no_dense_prompt(1)}
    return session.run(None, feeds)


def compare(shipped: Path, fresh: Path, manifest: dict) -> list[str]:
    """Differences between the shipped files and a fresh export (empty: they match)."""
    problems = []
    stored = json.loads((shipped / "manifest.json").read_text())
    if stored["weights_sha256"] != manifest["weights_sha256"]:
        problems.append("the shipped models come from other LiteMedSAM weights")
    if stored.get("click_adapter_tag") != manifest["click_adapter_tag"]:
        problems.append("the shipped click decoder is not the click adapter of the package")
    if set(stored["files"]) != set(manifest["files"]):
        problems.append(f"files differ: {sorted(stored['files'])} vs {sorted(manifest['files'])}")
    pairs = [(shipped / n, fresh / n, "encoder" if "encoder" in n else "decoder")
             for n in manifest["files"] if (shipped / n).is_file()]
    pairs += [(d / ONNX_FILE, fresh / f"{name}-{ONNX_FILE}", "head")
              for name, d in list_heads().items()]
    for old, new, kind in pairs:
        if not old.is_file():
            problems.append(f"{old} is missing")
            continue
        if file_sha256(old) != stored["files"].get(old.name, stored["heads"].get(
                old.parent.name)):
            problems.append(f"{old} does not match its recorded sha256")
        if "int8" in old.name:  # see `requantized`
            new, what = requantized(old, fresh / "requantized"), "its fp32 file quantized again"
        else:
            what = "a fresh export"
        for a, b in zip(outputs(old, kind, np.random.default_rng(0)),
                        outputs(new, kind, np.random.default_rng(0)), strict=True):
            err = float(np.abs(a - b).max() / max(1.0, np.abs(b).max()))
            if err > 1e-4:
                problems.append(f"{old.name}: outputs differ from {what} by {err:.2g}")
    return problems


def requantized(int8: Path, folder: Path) -> Path:
    """The shipped fp32 model next to `int8`, quantized again as the export does.

    An int8 file is checked against its own fp32 file (itself checked against a fresh export),
    not against a fresh int8 export: the export folds a few weights on the CPU, which moves them
    by ~1e-6 from one processor to another, and dynamic int8 turns that into a 3 % difference in
    the encoder's output (measured) while quantizing one fp32 file is exact on any machine.
    """
    from napari_medsam.core.backends.quantize import quantize_dynamic_int8, quantize_encoder

    folder.mkdir(exist_ok=True)
    fp32, out = int8.with_name(int8.name.replace("-int8-", "-fp32-")), folder / int8.name
    if "encoder" in int8.name:
        quantize_encoder(fp32, out, None, "int8")
    else:
        quantize_dynamic_int8(fp32, out)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true",
                   help="compare the shipped files with a fresh export (changes nothing)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        manifest = export_all(fresh)
        if args.check:
            problems = compare(shipped_onnx_dir(), fresh, manifest)
            print("\n".join(problems) or "the shipped ONNX models match a fresh export")
            return 1 if problems else 0
        install(fresh, manifest)
    total = sum(f.stat().st_size for f in shipped_onnx_dir().glob("*.onnx"))
    print(f"wrote {len(manifest['files'])} models ({total / 2**20:.1f} MiB) to "
          f"{shipped_onnx_dir()} and {len(manifest['heads'])} head.onnx files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
