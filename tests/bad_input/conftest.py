"""Fixtures of the bad-input matrix (issue 16): small bad files built once, the CLI run in-process,
a guard proving a refusal came before any model loaded, and one shared model for the few cases
that need it."""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from bad_input_helpers import dicom_series
from PIL import Image

from napari_medsam.sample import sample_ct_path, sample_labels_path

CLICK_ADAPTER = Path(__file__).resolve().parents[2] / "napari_medsam/resources/adapters/click"


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims width x height pixels (no pixel data follows)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def _manifest(folder: Path, pairs: list[dict] | str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    text = pairs if isinstance(pairs, str) else json.dumps({"pairs": pairs})
    (folder / "manifest.json").write_text(text)
    return folder


@pytest.fixture(scope="session")
def bad(tmp_path_factory) -> Path:
    """A folder of good and bad inputs (all small): images, volumes, DICOM series, manifests,
    adapters, and a file standing where a folder is expected."""
    root = tmp_path_factory.mktemp("bad-input")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    disk = ((yy - 30) ** 2 + (xx - 34) ** 2 < 12**2)
    good = (40 + 150 * disk + rng.integers(0, 30, (64, 64))).astype(np.uint8)
    Image.fromarray(good).save(root / "good.png")
    Image.fromarray(np.zeros((48, 48), np.uint8)).save(root / "zeros.png")
    Image.fromarray(rng.integers(0, 255, (512, 512), dtype=np.uint8)).save(root / "big.png")
    (root / "empty.png").write_bytes(b"")
    (root / "text.png").write_text("<html>404 Not Found</html>\n")
    raw = (root / "big.png").read_bytes()
    (root / "truncated.png").write_bytes(raw[: len(raw) // 2])
    (root / "text.nii.gz").write_text("not a NIfTI file")
    (root / "afile").write_text("a file where a folder should be")
    _png_header_only(root / "huge.png", 60000, 60000)

    ct = nib.load(str(sample_ct_path()))
    part = np.asarray(ct.dataobj)[:, :, 12:20]  # 8 axial slices of 122 x 101
    nib.save(nib.Nifti1Image(part, ct.affine, ct.header), root / "ct.nii.gz")
    nib.save(nib.Nifti1Image(part[:, :, 2:5], ct.affine, ct.header), root / "ct3.nii.gz")
    labels = nib.load(str(sample_labels_path()))
    nib.save(nib.Nifti1Image(np.asarray(labels.dataobj)[:, :, 12:20], ct.affine),
             root / "ct_labels.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((40, 40, 4), np.int16), np.eye(4)), root / "zeros.nii.gz")
    nan = part.astype(np.float32)
    nan[10, 10, 3] = np.nan
    nib.save(nib.Nifti1Image(nan, ct.affine), root / "nan.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4, 3), np.int16), np.eye(4)), root / "4d.nii.gz")
    header = nib.Nifti1Header()
    header.set_data_shape((30000, 30000, 2000))
    header.set_data_dtype(np.int16)
    (root / "huge.nii").write_bytes(header.binaryblock + b"\0" * 4)  # claims 3.6 TB, holds none

    series = (rng.integers(0, 300, (5, 32, 32))).astype(np.int16)
    dicom_series(root / "dicom_good", series)
    dicom_series(root / "dicom_onebad", series)
    (root / "dicom_onebad" / "2.dcm").write_bytes(b"garbage" * 20)
    dicom_series(root / "dicom_gap", series, positions=[0, 3, 6, 12, 15])
    dicom_series(root / "dicom_dup", series, positions=[0, 3, 3, 6, 9])

    mask = (disk * 1).astype(np.uint8)
    pairs = []
    for name in ("a", "b", "c", "d"):
        (root / "data/images").mkdir(parents=True, exist_ok=True)
        (root / "data/masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(good).save(root / f"data/images/{name}.png")
        Image.fromarray(mask).save(root / f"data/masks/{name}.png")
        pairs.append({"dataset": "toy", "case": name, "image": f"images/{name}.png",
                      "mask": f"masks/{name}.png"})
    _manifest(root / "data", pairs)
    _manifest(root / "m_notjson", "{not json")
    _manifest(root / "m_nopairs", json.dumps({"pairs": []}))
    _manifest(root / "m_nokey", json.dumps({"cases": []}))
    _manifest(root / "m_badpair", [{"dataset": "toy", "image": "images/a.png"}])
    _manifest(root / "m_missing", [{**pairs[0], "image": "images/gone.png"}])
    shutil.copytree(root / "data", root / "m_mismatch")
    Image.fromarray(mask[:32, :32]).save(root / "m_mismatch/masks/a.png")

    shutil.copytree(CLICK_ADAPTER, root / "adapter_damaged")
    (root / "adapter_damaged/adapter_model.safetensors").write_bytes(b"\x00damaged" * 64)
    shutil.copytree(CLICK_ADAPTER, root / "adapter_otherbase")
    meta = json.loads((root / "adapter_otherbase/metadata.json").read_text())
    meta["base_model"] = "sam_vit_b"
    meta.pop("base_model_sha256")
    (root / "adapter_otherbase/metadata.json").write_text(json.dumps(meta))
    shutil.copytree(CLICK_ADAPTER, root / "adapter_badmeta")
    (root / "adapter_badmeta/metadata.json").write_text("{oops")
    return root


@pytest.fixture
def no_model(monkeypatch):
    """Fail loudly if a case gets as far as reading model weights or building an ONNX
    backend: its refusal must come before any work."""
    import napari_medsam.core.backends as backends
    import napari_medsam.core.model as model

    def loaded(*args, **kwargs):
        raise AssertionError("the model was loaded: this input should be refused before work")

    monkeypatch.setattr(model, "_read_state", loaded)
    monkeypatch.setattr(backends, "onnx_backend_for", loaded)


@pytest.fixture
def shared_model(model, monkeypatch):
    """The verbs' `make_predictor` answers with the session's one model (no reload per case);
    --cache-dir / --no-disk-cache keep their meaning."""
    from napari_medsam.commands import auto, embed, evaluate, propagate, segment
    from napari_medsam.core.predictor import Predictor
    from napari_medsam.core.runtime import default_cache

    made = []

    def make(args, profile=None):
        made.append(Predictor(model, default_cache(args.cache_dir, not args.no_disk_cache)))
        return made[-1]

    for module in (auto, embed, evaluate, propagate, segment):
        monkeypatch.setattr(module, "make_predictor", make)
    return made
