"""Shared fixtures: the real dev data beside the repo, one LiteMedSAM loaded per test run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("NAPARI_MEDSAM_DATA", REPO.parent / "shared" / "data"))
TRAIN_DIR = Path(os.environ.get("NAPARI_MEDSAM_TRAIN", REPO.parent / "shared" / "train"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """../shared/data beside the repo; tests that need it skip only when it is absent."""
    if not (DATA_DIR / "manifest.json").is_file():
        pytest.skip(f"real dev data not found at {DATA_DIR}")
    return DATA_DIR


@pytest.fixture(scope="session")
def manifest(data_dir) -> list[dict]:
    return json.loads((data_dir / "manifest.json").read_text())["pairs"]


@pytest.fixture(scope="session")
def model():
    """The built-in LiteMedSAM on the CPU, loaded once."""
    from napari_medsam.core.runtime import RuntimeSpec, load_torch

    return load_torch(RuntimeSpec(device="cpu"))


@pytest.fixture
def predictor(model):
    """A fresh predictor (memory-only cache) over the shared model."""
    from napari_medsam.core.embeddings import EmbeddingCache
    from napari_medsam.core.predictor import Predictor

    return Predictor(model, EmbeddingCache())


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Keep the per-user cache, corrections and adapters of the test run out of the home
    folder."""
    os.environ.setdefault("NAPARI_MEDSAM_CACHE", str(tmp_path_factory.mktemp("user-cache")))
    os.environ.setdefault("NAPARI_MEDSAM_PROJECT", str(tmp_path_factory.mktemp("project")))
    os.environ.setdefault("NAPARI_MEDSAM_ADAPTERS", str(tmp_path_factory.mktemp("adapters")))
