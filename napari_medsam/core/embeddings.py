"""Embedding cache: an in-memory LRU with a byte budget plus an optional fp16 on-disk store.

Entries are keyed by a hash of the pixel data, the model (id + weights hash + encoder adapter) and
the preprocessing, so a hit is always safe to use and skips the encoder. Disk writes are atomic
(temporary file + rename); an entry that fails to load, does not match its key or is not what the
encoder gives (shape, dtype, finite values: `checks.embedding_arrays`) is deleted and recomputed,
with a warning, never a crash.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import atomic_write
from .checks import embedding_arrays

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
FEATURE_SHAPE = (256, 64, 64)  # every model here (TinyViT at 256 px, ViT-B at 1024 px)


@dataclass
class Embedding:
    """Encoder output for one image plus the geometry needed to map masks back."""

    features: np.ndarray  # float32 (256, 64, 64)
    original_size: tuple[int, int]  # (H, W) of the image given to set_image
    input_size: tuple[int, int]  # (h, w) of the resized image inside the padded square

    @property
    def nbytes(self) -> int:
        return int(self.features.nbytes)


def pixel_hash(image: np.ndarray) -> str:
    """Content hash of an array: dtype, shape and bytes."""
    digest = hashlib.sha256()
    digest.update(f"{image.dtype.str}{image.shape}".encode())
    digest.update(np.ascontiguousarray(image).data)
    return digest.hexdigest()


def make_key(pixels_hash: str, model_cache_id: str, preprocessing: str) -> str:
    """The cache key: pixels, model and preprocessing together."""
    text = f"v{FORMAT_VERSION}|{pixels_hash}|{model_cache_id}|{preprocessing}"
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def default_cache_dir() -> Path:
    """Per-user cache folder ($NAPARI_MEDSAM_CACHE, else ~/.cache/napari-medsam)."""
    root = os.environ.get("NAPARI_MEDSAM_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "napari-medsam"
    )
    return Path(root)


class EmbeddingCache:
    """Memory LRU (byte budget) in front of an optional on-disk store.

    Args:
        memory_bytes: most bytes kept in RAM; least recently used entries are dropped first.
        disk_dir: folder for the fp16 on-disk store, or None for memory only.
        feature_shape: the shape a stored embedding must have (None: any 3D array).
    """

    def __init__(self, memory_bytes: int = 1 << 30, disk_dir: str | Path | None = None,
                 feature_shape: tuple[int, ...] | None = FEATURE_SHAPE):
        self.memory_bytes = int(memory_bytes)
        self.disk_dir = Path(disk_dir) if disk_dir is not None else None
        self.feature_shape = feature_shape
        self._mem: OrderedDict[str, Embedding] = OrderedDict()
        self._used = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __contains__(self, key: str) -> bool:
        return key in self._mem or (self._path(key) is not None and self._path(key).is_file())

    def get(self, key: str) -> Embedding | None:
        """The cached embedding, from memory or disk, or None."""
        with self._lock:
            entry = self._mem.get(key)
            if entry is not None:
                self._mem.move_to_end(key)
                self.hits += 1
                return entry
        entry = self._load(key)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self._remember(key, entry)
        return entry

    def put(self, key: str, entry: Embedding) -> None:
        """Store in memory and, when a disk folder is set, atomically on disk.

        Features are rounded to float16 precision (what the disk keeps) in memory too, so a
        result never depends on whether its embedding came from memory, disk or the encoder.
        """
        entry.features = np.asarray(entry.features, dtype=np.float16).astype(np.float32)
        self._remember(key, entry)
        if self.disk_dir is not None:
            self._save(key, entry)

    def clear_memory(self) -> None:
        with self._lock:
            self._mem.clear()
            self._used = 0

    def _remember(self, key: str, entry: Embedding) -> None:
        with self._lock:
            if key in self._mem:
                self._used -= self._mem.pop(key).nbytes
            if entry.nbytes > self.memory_bytes:
                return
            self._mem[key] = entry
            self._used += entry.nbytes
            while self._used > self.memory_bytes and self._mem:
                _, old = self._mem.popitem(last=False)
                self._used -= old.nbytes

    def file(self, key: str) -> Path | None:
        """Where `key` is stored on disk (None without a disk folder); it may not exist yet."""
        return self._path(key)

    def _path(self, key: str) -> Path | None:
        return None if self.disk_dir is None else self.disk_dir / key[:2] / f"{key}.npz"

    def _save(self, key: str, entry: Embedding) -> None:
        path = self._path(key)
        try:
            atomic_write(path, lambda handle: np.savez(
                handle,
                key=np.array(key),
                features=entry.features.astype(np.float16),
                original_size=np.array(entry.original_size, dtype=np.int64),
                input_size=np.array(entry.input_size, dtype=np.int64),
            ))
        except OSError as exc:
            log.warning("Could not write the embedding cache file %s (%s); continuing.", path, exc)

    def _load(self, key: str) -> Embedding | None:
        path = self._path(key)
        if path is None or not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                if str(data["key"]) != key:
                    raise ValueError("key mismatch")
                features = data["features"]
                embedding_arrays(features, data["original_size"], data["input_size"],
                                 self.feature_shape)
                entry = Embedding(
                    features=features.astype(np.float32),
                    original_size=tuple(int(v) for v in data["original_size"]),
                    input_size=tuple(int(v) for v in data["input_size"]),
                )
            return entry
        except Exception as exc:  # any damage: drop the file, recompute
            log.warning("Discarding damaged embedding cache file %s (%s); recomputing.", path, exc)
            path.unlink(missing_ok=True)
            return None
