"""The rules of `core.checks` and their neighbours through the core API (what napari and Slicer
call): each bad value is an error in plain words, damaged artefacts are refused or healed,
written files get the umask's permissions, and a bug is reported with a log file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from bad_input_helpers import run_cli

from napari_medsam.core import checks
from napari_medsam.core.atomic import atomic_folder, atomic_text, atomic_write_path
from napari_medsam.core.embeddings import Embedding, EmbeddingCache
from napari_medsam.core.errors import CheckpointError, InputError, OutputError
from napari_medsam.core.io import read_image, write_labels
from napari_medsam.core.storage import check_base_model, read_metadata, write_metadata


@pytest.mark.parametrize("rule, value, words", [
    (lambda v: checks.whole(v, "--steps"), "0", "--steps must be 1 or more, not 0"),
    (lambda v: checks.whole(v, "--steps"), "2.5", "must be a whole number"),
    (lambda v: checks.whole(v, "--max-slices"), "-3", "must be 1 or more, not -3"),
    (lambda v: checks.fraction(v, "--val-fraction"), "1.5", "between 0 and 1"),
    (lambda v: checks.fraction(v, "--val-fraction"), "0", "between 0 and 1"),
    (lambda v: checks.positive(v, "--lr"), "-1", "must be more than 0"),
    (lambda v: checks.positive(v, "--minutes"), "inf", "finite number"),
    (checks.label_value, "65536", "between 1 and 65535"),
    (checks.point_label, "2", "must be 1 \\(positive\\) or 0"),
    (checks.point_label, "0.5", "must be 1 \\(positive\\) or 0"),
    (checks.device_name, "gpu", "Unknown device 'gpu'"),
], ids=["whole-zero", "whole-fraction", "whole-negative", "fraction-above-1", "fraction-zero",
        "positive-negative", "positive-inf", "label-too-large", "point-label-2",
        "point-label-half", "device-unknown"])
def test_rule_refuses_in_words(rule, value, words):
    with pytest.raises(InputError, match=words):
        rule(value)


def _store(cache: EmbeddingCache, name: str, **arrays) -> Path:
    path = cache._path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = dict(key=np.array(name), features=np.zeros((256, 64, 64), np.float16),
                original_size=np.array([8, 8]), input_size=np.array([256, 256]))
    np.savez(path, **{**base, **arrays})
    return path


@pytest.mark.parametrize("arrays", [
    {"features": np.zeros((256, 64, 64), np.int8)},
    {"features": np.zeros((64, 64), np.float16)},
    {"original_size": np.array([8])},
    {"input_size": np.array([0, 256])},
    {"key": np.array("another key")},
], ids=["integer-features", "2d-features", "one-size", "zero-size", "key-mismatch"])
def test_cache_discards_what_the_encoder_never_gives(arrays, tmp_path, caplog):
    cache = EmbeddingCache(disk_dir=tmp_path)
    path = _store(cache, "a" * 40, **arrays)
    assert cache.get("a" * 40) is None and not path.exists()
    assert "Discarding damaged embedding cache file" in caplog.text
    _store(cache, "b" * 40)  # a sound file still loads
    assert cache.get("b" * 40).features.shape == (256, 64, 64)


class _Model:
    model_id, weights_sha256 = "litemedsam", "79d8c9dca6db" + "0" * 52


@pytest.mark.parametrize("meta, ok", [
    ({"base_model": "sam_vit_b"}, False),
    ({"base_model": "litemedsam"}, True),
    ({"base_model": "litemedsam", "base_model_sha256": "f" * 64}, False),
    ({}, True),
], ids=["other-base-no-hash", "same-base-no-hash", "other-weights", "no-claim"])
def test_base_model_rule(meta, ok):
    if ok:
        check_base_model(meta, _Model())
    else:
        with pytest.raises(CheckpointError, match="Load|made for"):
            check_base_model(meta, _Model())


def test_damaged_adapter_and_head_are_refused(bad, model, tmp_path):
    from napari_medsam.core.adapters import Adapters
    from napari_medsam.core.autoseg import load_head
    from napari_medsam.core.autoseg.store import list_heads

    with pytest.raises(CheckpointError, match="adapter_model.safetensors is damaged"):
        Adapters(model).load(bad / "adapter_damaged", name="damaged")
    head = tmp_path / "head"
    shutil.copytree(list_heads()["camus-patch"], head)
    weights = head / "head.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated by a failed copy
    with pytest.raises(CheckpointError, match="damaged or incomplete"):
        load_head(head, model)


def test_image_readers_in_words(bad):
    with pytest.raises(InputError, match="empty \\(0 bytes\\)"):
        read_image(bad / "empty.png")
    with pytest.raises(InputError, match="not a readable image"):
        read_image(bad / "text.png")
    vol = read_image(bad / "dicom_good")  # a sound series still reads, with its spacing
    assert vol.data.shape == (5, 32, 32) and vol.spacing == pytest.approx((3.0, 1.0, 1.0))


def test_unexpected_error_names_a_log_file(bad, capsys, monkeypatch):
    from napari_medsam.commands import embed

    def bug(args):
        raise ZeroDivisionError("a genuine bug")

    monkeypatch.setattr(embed, "run", bug)
    code, _, err = run_cli(capsys, "embed", bad / "good.png")
    assert code == 70 and "Traceback" not in err
    assert "An unexpected problem (ZeroDivisionError: a genuine bug)" in err
    log = Path(err.split("The details are in ", 1)[1].split("; please report it")[0])
    text = log.read_text()
    assert "Traceback" in text and "a genuine bug" in text and "embed" in text


def test_memory_error_is_plain(bad, capsys, monkeypatch):
    from napari_medsam.commands import embed

    def oom(args):
        raise MemoryError

    monkeypatch.setattr(embed, "run", oom)
    code, _, err = run_cli(capsys, "embed", bad / "good.png")
    assert code == 2 and "error: Ran out of memory" in err


def test_outputs_get_the_umask_permissions(tmp_path, monkeypatch):
    import napari_medsam.core.atomic as atomic
    from napari_medsam.core.report import write_log

    monkeypatch.setattr(atomic, "_UMASK", None)
    monkeypatch.setenv("NAPARI_MEDSAM_CACHE", str(tmp_path / "user"))
    old = os.umask(0o027)
    try:
        files = [write_labels(tmp_path / "l.png", np.eye(8, dtype=np.uint8)),
                 write_labels(tmp_path / "l.nii.gz", np.ones((2, 8, 8), np.uint8)),
                 atomic_text(tmp_path / "r.json", "[]")]
        cache = EmbeddingCache(disk_dir=tmp_path / "cache")
        cache.put("c" * 40, Embedding(np.zeros((256, 64, 64), np.float32), (8, 8), (256, 256)))
        files.append(cache._path("c" * 40))
        with atomic_folder(tmp_path / "adapter") as folder:
            write_metadata(folder, {"name": "x"})
            (folder / "weights.bin").write_bytes(b"w")
        files += [tmp_path / "adapter/metadata.json", tmp_path / "adapter/weights.bin"]
        files.append(write_log(RuntimeError("x")))
    finally:
        os.umask(old)
    assert {oct(f.stat().st_mode & 0o777) for f in files} == {"0o640"}
    assert oct((tmp_path / "adapter").stat().st_mode & 0o777) == "0o750"


def test_failing_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "labels.png"
    target.write_bytes(b"old")

    def fails(tmp):
        tmp.write_bytes(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OutputError, match="No space left on device. The previous file is "
                                          "unchanged. Free some disk space"):
        atomic_write_path(target, fails)
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["labels.png"]


def test_full_disk_on_a_tiny_tmpfs(tmp_path):
    """A real full disk: a 64 KiB tmpfs (needs root to mount; skipped elsewhere)."""
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(tiny)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        write_labels(tiny / "seg.nii", np.ones((4, 8, 8), np.uint8))
        before = (tiny / "seg.nii").read_bytes()
        with pytest.raises(OutputError, match="No space left on device. The previous file"):
            write_labels(tiny / "seg.nii", np.ones((40, 64, 64), np.uint8))
        assert (tiny / "seg.nii").read_bytes() == before
        assert os.listdir(tiny) == ["seg.nii"]
    finally:
        subprocess.run(["umount", str(tiny)], check=False)


def test_killed_between_the_two_renames_of_a_folder_commit(tmp_path):
    """A kill after the old adapter folder was moved aside and before the new one moved in:
    the next read puts the old one back."""
    folder = tmp_path / "my-adapter"
    with atomic_folder(folder) as tmp:
        write_metadata(tmp, {"name": "v1"})
    os.replace(folder, folder.with_name("my-adapter.old"))  # the state a kill -9 leaves
    assert read_metadata(folder)["name"] == "v1" and not folder.with_name("my-adapter.old").exists()


def test_demo_overlay_is_in_napari_orientation(tmp_path):
    """The overlay PNG shows the CT as napari does (the reader's array, radiological: the
    patient's right, where the liver is, on the left of the picture)."""
    from PIL import Image

    from napari_medsam.annotator.reader import read_layers
    from napari_medsam.commands.demo import write_overlay
    from napari_medsam.core.intensity import get_preset
    from napari_medsam.core.volume import read_volume
    from napari_medsam.sample import sample_ct_path, sample_labels_path

    shown = read_layers(str(sample_ct_path()))[0][0]
    ct = read_volume(sample_ct_path())
    np.testing.assert_array_equal(ct.data, shown)  # what the demo segments is napari's array
    liver = ct.labels_from_file(sample_labels_path()) == 5
    z = int(np.argmax(liver.sum(axis=(1, 2))))
    image01 = get_preset("ct-soft-tissue").apply(shown[z])
    path = write_overlay(str(tmp_path / "o.png"), image01, liver[z].astype(np.uint16))
    png = np.asarray(Image.open(path))
    gray = png[::4, ::4][~liver[z]][:, 0]
    np.testing.assert_array_equal(gray, (image01 * 255).astype(np.uint8)[~liver[z]])
    columns = np.nonzero(np.any(png[::4, ::4] != np.repeat(
        (image01 * 255).astype(np.uint8)[..., None], 3, axis=2), axis=(0, 2)))[0]
    assert columns.mean() < png.shape[1] / 8  # the liver is drawn on the left half


def test_timm_future_warnings_are_not_printed():
    code = ("import warnings; warnings.simplefilter('default')\n"
            "from napari_medsam.core.model import _build_tinyvit; _build_tinyvit()")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "FutureWarning" not in done.stderr and "timm" not in done.stderr


def test_json_manifest_rules_in_the_core(bad):
    from napari_medsam.core.evaluation import select_pairs

    assert [p["case"] for p in select_pairs(bad / "data", ["toy"], max_cases=2)] == ["a", "b"]
    with pytest.raises(InputError, match="is not valid JSON"):
        select_pairs(bad / "m_notjson")
    json.loads((bad / "data/manifest.json").read_text())  # untouched
