"""Tests of the Slicer extension against the real MRML libraries of PyPI's `slicer-core`.

They need a separate environment (vtk is large): `bash scripts/test_slicer.sh` makes it and runs
them. Without `slicer-core` the MRML test modules skip themselves (importorskip at their top);
the numpy-only ones (geometry, module files) run in any environment.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

MODULE_DIR = Path(__file__).resolve().parents[2] / "slicer_extension" / "MedSAM"
sys.path.insert(0, str(MODULE_DIR))


@pytest.fixture(scope="session")
def context():
    """One headless scene with the converter rules and module logics, as Slicer sets it up."""
    from MedSAMLib import headless

    return headless.setup_scene()


@pytest.fixture
def scene(context):
    """The scene, emptied after each test."""
    yield context.scene
    context.scene.Clear(0)


@pytest.fixture(scope="session")
def logic(model):
    """A MedSAMLogic over the shared LiteMedSAM (memory cache only)."""
    from MedSAMLib.logic import MedSAMLogic

    from napari_medsam.core.embeddings import EmbeddingCache
    from napari_medsam.core.predictor import Predictor

    return MedSAMLogic(predictor=Predictor(model, EmbeddingCache()))


@pytest.fixture(scope="session")
def nifti_case(manifest, data_dir):
    """nifti_case(dataset, index) -> (image path, label path) of a 3D manifest pair."""

    def find(dataset: str, index: int = 0) -> tuple[Path, Path]:
        pair = [p for p in manifest if p["dataset"] == dataset][index]
        return data_dir / pair["image"], data_dir / pair["mask"]

    return find


def nib_geometry(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(K, J, I) array and affine as nibabel reads them (independent of the code under test)."""
    import nibabel as nib

    img = nib.load(str(path))
    return np.asarray(img.dataobj).transpose(2, 1, 0), np.asarray(img.affine, dtype=float)


@pytest.fixture(scope="session")
def read_nifti():
    return nib_geometry
