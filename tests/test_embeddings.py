"""Embedding cache: hits skip the encoder, disk store is atomic and survives damage."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from napari_medsam.core.embeddings import Embedding, EmbeddingCache
from napari_medsam.core.predictor import Predictor


@pytest.fixture
def image():
    rng = np.random.default_rng(0)
    img = np.zeros((96, 128), np.uint8)
    img[30:70, 40:90] = 180
    return (img + rng.integers(0, 30, img.shape)).astype(np.uint8)


def test_cache_hit_skips_encoder(model, image, tmp_path, monkeypatch):
    first = Predictor(model, EmbeddingCache(disk_dir=tmp_path))
    first.set_image(image)
    ref = first.predict(box=[40, 30, 90, 70])
    assert first.encoder_calls == 1
    first.set_image(image.copy())  # same pixels, new array: memory hit
    assert first.encoder_calls == 1

    def boom(*args, **kwargs):
        raise AssertionError("the encoder ran on a cache hit")

    # a new predictor (e.g. the layer reopened later) reads the disk store; the encoder never runs
    monkeypatch.setattr(model, "image_encoder", boom)
    second = Predictor(model, EmbeddingCache(disk_dir=tmp_path))
    second.set_image(image)
    again = second.predict(box=[40, 30, 90, 70])
    assert second.encoder_calls == 0
    assert (again.masks == ref.masks).mean() > 0.999  # fp16 on disk


def test_preset_is_part_of_the_key(model, image):
    p = Predictor(model, EmbeddingCache())
    assert p.image_key(image, "auto") != p.image_key(image, "ct-soft-tissue")
    assert p.image_key(image, "auto") == p.image_key(image.copy(), "auto")
    assert p.image_key(image, "auto") != p.image_key(image[::-1], "auto")


def test_corrupt_cache_file_is_recomputed(model, image, tmp_path, caplog):
    p = Predictor(model, EmbeddingCache(disk_dir=tmp_path))
    key = p.set_image(image)
    files = list(tmp_path.rglob("*.npz"))
    assert len(files) == 1 and key in files[0].name
    files[0].write_bytes(b"\x00garbage" * 50)
    fresh = Predictor(model, EmbeddingCache(disk_dir=tmp_path))
    with caplog.at_level(logging.WARNING):
        fresh.set_image(image)
    assert fresh.encoder_calls == 1
    assert "Discarding damaged embedding cache file" in caplog.text
    assert fresh.predict(box=[40, 30, 90, 70]).masks.any()
    # the damaged file was replaced by a good one
    assert Predictor(model, EmbeddingCache(disk_dir=tmp_path)).cache.get(key) is not None


def test_mismatching_entry_is_discarded(tmp_path):
    cache = EmbeddingCache(disk_dir=tmp_path)
    entry = Embedding(np.ones((256, 64, 64), np.float32), (10, 10), (256, 256))
    cache.put("a" * 40, entry)
    src = next(tmp_path.rglob("*.npz"))
    dst = tmp_path / "bb" / ("b" * 40 + ".npz")
    dst.parent.mkdir(exist_ok=True)
    src.rename(dst)  # a file whose content belongs to another key
    assert EmbeddingCache(disk_dir=tmp_path).get("b" * 40) is None
    assert not dst.exists()


def test_memory_budget_evicts_least_recently_used():
    one = Embedding(np.zeros((256, 64, 64), np.float32), (8, 8), (256, 256))
    cache = EmbeddingCache(memory_bytes=int(one.nbytes * 2.5))
    for key in "abc":
        cache.put(key * 40, Embedding(one.features.copy(), (8, 8), (256, 256)))
    assert cache.get("a" * 40) is None  # evicted first
    assert cache.get("b" * 40) is not None and cache.get("c" * 40) is not None


def test_disk_writes_leave_no_temporary_files(tmp_path):
    cache = EmbeddingCache(disk_dir=tmp_path)
    cache.put("c" * 40, Embedding(np.zeros((256, 64, 64), np.float32), (8, 8), (256, 256)))
    names = [p.name for p in tmp_path.rglob("*") if p.is_file()]
    assert names == ["c" * 40 + ".npz"]
    stored = np.load(tmp_path / "cc" / names[0])["features"]
    assert stored.dtype == np.float16
