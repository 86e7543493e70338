"""Faults on the real entry point, in subprocesses: kill -9 and Ctrl-C during `embed` leave a
cache whose every file loads, concurrent writers to one cache key leave one sound file, a kill
during a folder commit leaves the old folder, and an expected error never prints a traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from napari_medsam.core.embeddings import EmbeddingCache

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}


def _start(*argv, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "napari_medsam.cli", *map(str, argv)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                            **kwargs)


def _wait_for_files(folder: Path, n: int, proc: subprocess.Popen, timeout: float = 240) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        if len([p for p in folder.rglob("*.npz") if not p.name.startswith(".")]) >= n:
            return
        time.sleep(0.05)


def _every_file_loads(folder: Path) -> int:
    """Every cache entry named by its key loads (no half-written file under a key's name)."""
    cache = EmbeddingCache(disk_dir=folder)
    keys = [p.stem for p in folder.rglob("*.npz") if not p.name.startswith(".")]
    for key in keys:
        assert cache.get(key) is not None, key
    return len(keys)


@pytest.mark.parametrize("how", ["kill-9", "ctrl-c"])
def test_interrupted_embed_leaves_a_sound_cache(how, bad, tmp_path):
    cache = tmp_path / "cache"
    proc = _start("embed", bad / "ct3.nii.gz", "--cache-dir", cache, "--device", "cpu")
    _wait_for_files(cache, 1, proc)
    proc.send_signal(signal.SIGKILL if how == "kill-9" else signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    done = _every_file_loads(cache)
    assert done >= 1
    if how == "ctrl-c":
        if done < 3:  # unless it finished before the signal came
            assert proc.returncode == 130 and "cancelled" in err and "Traceback" not in err
        return
    again = _start("embed", bad / "ct3.nii.gz", "--cache-dir", cache, "--device", "cpu")
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0 and "3 slice(s) embedded" in out, err
    assert f"{3 - done} computed, {done} from cache" in out  # finished slices were kept


WRITER = """
import sys, numpy as np
from napari_medsam.core.embeddings import Embedding, EmbeddingCache
cache = EmbeddingCache(disk_dir=sys.argv[1])
value = float(sys.argv[2])
for _ in range(15):
    cache.put("k" * 40, Embedding(np.full((256, 64, 64), value, np.float32), (8, 8), (256, 256)))
"""


def test_concurrent_writers_to_one_cache_key(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(v)], env=ENV)
             for v in range(4)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    entry = EmbeddingCache(disk_dir=tmp_path).get("k" * 40)
    assert entry is not None and len(np.unique(entry.features)) == 1  # one writer's, whole
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["k" * 40 + ".npz"]


COMMIT = """
import os, signal, sys
from pathlib import Path
from napari_medsam.core.atomic import atomic_folder
with atomic_folder(Path(sys.argv[1])) as tmp:
    (tmp / "adapter_model.safetensors").write_bytes(b"new, half written")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_kill_during_an_adapter_commit_keeps_the_old_folder(tmp_path):
    folder = tmp_path / "my-adapter"
    folder.mkdir()
    (folder / "adapter_model.safetensors").write_bytes(b"old, complete")
    proc = subprocess.run([sys.executable, "-c", COMMIT, str(folder)], env=ENV, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert (folder / "adapter_model.safetensors").read_bytes() == b"old, complete"


def test_real_entry_point_answers_in_words(bad, tmp_path):
    """The installed command's own exit code and output: a line, no traceback."""
    proc = _start("segment", bad / "text.png", "--box", "1", "1", "9", "9", "-o",
                  tmp_path / "m.png")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and err.startswith("error: ") and "Traceback" not in err
    assert err.count("\n") == 1 and not (tmp_path / "m.png").exists()
