"""Bad input that needs the model to answer (one shared LiteMedSAM): uninformative images and
prompts give an empty mask with a note, never an invented one; damaged cache files are healed;
Ctrl-C and a full disk keep what was finished and what was there."""

from __future__ import annotations

import errno
import json
import logging

import numpy as np
import pytest
from bad_input_helpers import run_cli

from napari_medsam.core.embeddings import Embedding, EmbeddingCache
from napari_medsam.core.errors import InputError
from napari_medsam.core.io import read_image
from napari_medsam.core.metrics import bbox
from napari_medsam.core.predictor import Predictor
from napari_medsam.core.volume import read_volume

BOX = ["20", "18", "48", "44"]


def _pixels(path) -> int:
    return int((np.asarray(read_image(path).data) > 0).sum())


def test_good_input_still_segments(bad, tmp_path, capsys, shared_model):
    code, out, err = run_cli(capsys, "segment", bad / "good.png", "--box", *BOX, "-o",
                             tmp_path / "m.png", "--no-disk-cache")
    assert code == 0 and "note:" not in out, err
    assert 200 < _pixels(tmp_path / "m.png") < 1500  # the disk (~450 px), not the image


def test_lone_negative_click_gives_an_empty_mask(bad, tmp_path, capsys, shared_model):
    code, out, _ = run_cli(capsys, "segment", bad / "good.png", "--point", "5", "5", "0", "-o",
                           tmp_path / "m.png", "--no-disk-cache")
    assert code == 0 and "note: Only negative clicks" in out and "(0 pixels" in out
    assert _pixels(tmp_path / "m.png") == 0


@pytest.mark.parametrize("name, box, out", [
    ("zeros.png", ["5", "5", "40", "40"], "m.png"),
    ("zeros.nii.gz", ["5", "5", "30", "30"], "m.nii.gz"),
], ids=["all-zero-2d", "all-zero-volume-slice"])
def test_uniform_image_gives_an_empty_mask(name, box, out, bad, tmp_path, capsys, shared_model):
    code, stdout, _ = run_cli(capsys, "segment", bad / name, "--box", *box, "-o",
                              tmp_path / out, "--no-disk-cache")
    assert code == 0 and "note: The image is uniform" in stdout
    assert _pixels(tmp_path / out) == 0


def test_auto_on_a_uniform_image_writes_nothing(bad, tmp_path, capsys, shared_model):
    code, out, _ = run_cli(capsys, "auto", bad / "zeros.png", "--head", "camus-patch", "-o",
                           tmp_path / "a.png", "--no-disk-cache")
    assert code == 0 and "the image is uniform: left empty" in out
    assert _pixels(tmp_path / "a.png") == 0


def test_propagate_from_a_uniform_slice_is_refused(bad, tmp_path, capsys, shared_model):
    code, _, err = run_cli(capsys, "propagate", bad / "zeros.nii.gz", "--box", "5", "5", "30",
                           "30", "-o", tmp_path / "p.nii.gz", "--no-disk-cache")
    assert code == 2 and "empty mask on slice 2: The image is uniform" in err
    assert not (tmp_path / "p.nii.gz").exists()


def _cache_file(model, cache_dir, image):
    cache = EmbeddingCache(disk_dir=cache_dir)
    return cache._path(Predictor(model, cache).image_key(image, "auto"))


@pytest.mark.parametrize("damage", ["wrong-shape", "nan", "garbage", "pickle"])
def test_damaged_cache_file_is_discarded_and_healed(damage, bad, model, tmp_path, capsys,
                                                    caplog, shared_model):
    image = np.asarray(read_image(bad / "good.png").data)
    path = _cache_file(model, tmp_path / "cache", image)
    path.parent.mkdir(parents=True)
    key = path.stem
    features = {"wrong-shape": np.zeros((256, 32, 32)), "nan": np.full((256, 64, 64), np.nan)}
    if damage in features:
        np.savez(path, key=np.array(key), features=features[damage].astype(np.float16),
                 original_size=np.array([64, 64]), input_size=np.array([256, 256]))
    elif damage == "garbage":
        path.write_bytes(b"\x00garbage" * 100)
    else:
        import pickle

        path.write_bytes(pickle.dumps({"features": "x"}))
    for run in range(2):  # the first run heals the file, the second uses it
        with caplog.at_level(logging.WARNING):
            code, _, err = run_cli(capsys, "segment", bad / "good.png", "--box", *BOX, "-o",
                                   tmp_path / "m.png", "--cache-dir", tmp_path / "cache")
        assert code == 0, err
        assert ("Discarding damaged embedding cache file" in caplog.text) == (run == 0)
        caplog.clear()
    with np.load(path) as data:
        assert data["features"].shape == (256, 64, 64) and np.isfinite(data["features"]).all()


def test_ctrl_c_during_propagation_keeps_finished_slices(bad, tmp_path, capsys, monkeypatch,
                                                          shared_model):
    vol = read_volume(bad / "ct.nii.gz")
    liver = vol.labels_from_file(bad / "ct_labels.nii.gz") == 5
    z = int(np.argmax(liver.sum(axis=(1, 2))))
    calls = []
    original = Predictor.predict

    def interrupted(self, *args, **kwargs):  # Ctrl-C while the third slice is decoded
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Predictor, "predict", interrupted)
    out = tmp_path / "p.nii.gz"
    code, stdout, _ = run_cli(capsys, "propagate", bad / "ct.nii.gz", "--slice", z, "--box",
                              *map(str, bbox(liver[z], 5)), "--preset", "ct-soft-tissue",
                              "--label", "3", "-o", out, "--no-disk-cache")
    assert code == 130 and "cancelled: wrote the slices finished so far" in stdout
    done = vol.labels_from_file(out) == 3
    assert done[z].any() and done.any(axis=(1, 2)).sum() == 2  # the start and one neighbour


def test_full_disk_keeps_the_old_output(bad, tmp_path, capsys, monkeypatch, shared_model):
    from PIL import Image

    out = tmp_path / "m.png"
    out.write_bytes(b"the previous result")

    def disk_full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", disk_full)
    code, _, err = run_cli(capsys, "segment", bad / "good.png", "--box", *BOX, "-o", out,
                           "--no-disk-cache")
    assert code == 2 and "No space left on device. The previous file is unchanged." in err
    assert out.read_bytes() == b"the previous result"
    assert [p.name for p in tmp_path.iterdir()] == ["m.png"]  # no temporary file left


def test_eval_progress_has_a_total_and_json_is_written(bad, tmp_path, capsys, shared_model):
    code, out, err = run_cli(capsys, "eval", bad / "data", "--max-cases", "2", "--json",
                             tmp_path / "r.json", "--no-disk-cache")
    assert code == 0 and "2/2" in err  # tqdm: done/total
    records = json.loads((tmp_path / "r.json").read_text())
    assert len(records) == 2 and records[0]["dice"] > 0.5


# ---- the core API: the same rules without the CLI -------------------------------------------
def test_predictor_point_label_must_be_0_or_1(model):
    predictor = Predictor(model, EmbeddingCache())
    predictor.set_embedding(Embedding(np.zeros((256, 64, 64), np.float32), (64, 64), (256, 256)))
    with pytest.raises(InputError, match="1 \\(positive\\) or 0"):
        predictor.predict(points=[[10, 10]], labels=[2])
    pred = predictor.predict(points=[[10, 10], [20, 20]], labels=[0, 0])  # no decode at all
    assert not pred.masks.any() and pred.note.startswith("Only negative clicks")
    assert (pred.low_res_logits < 0).all()


def test_predictor_on_a_uniform_image(model):
    predictor = Predictor(model, EmbeddingCache())
    predictor.set_image(np.full((40, 40), 7, np.uint16))
    pred = predictor.predict(box=[5, 5, 30, 30])
    assert not pred.masks.any() and "uniform" in pred.note and pred.scores[0] == 0
