"""The `napari-medsam` command line on real files: segment, embed, eval, help and errors."""

from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from napari_medsam.cli import COMMANDS, build_parser, main
from napari_medsam.core.io import read_image
from napari_medsam.core.metrics import bbox, dice
from napari_medsam.core.volume import read_volume
from napari_medsam.sample import sample_ct_path, sample_labels_path


def test_help_for_every_verb(capsys):
    parser = build_parser()
    verbs = parser._subparsers._group_actions[0].choices
    assert len(verbs) >= len(COMMANDS)
    for verb in verbs:
        with pytest.raises(SystemExit) as exc:
            main([verb, "--help"])
        assert exc.value.code == 0
        assert "usage: napari-medsam" in capsys.readouterr().out


def test_segment_png(tmp_path, data_dir, manifest, capsys):
    pair = next(p for p in manifest if p["dataset"] == "ph2")
    truth = np.asarray(read_image(data_dir / pair["mask"]).data) > 0
    out = tmp_path / "lesion.png"
    box = [str(v) for v in bbox(truth, 5)]
    assert main(["segment", str(data_dir / pair["image"]), "--box", *box, "-o", str(out),
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    mask = read_image(out).data
    assert mask.shape == truth.shape and dice(mask > 0, truth) > 0.9
    printed = capsys.readouterr().out
    assert "wrote" in printed
    assert float(printed.rsplit("score ", 1)[1].strip(" )\n")) > 0.5  # the model's IoU estimate


def test_segment_volume_slice_keeps_geometry(tmp_path):
    vol = read_volume(sample_ct_path())  # axial slices, the default frame of every verb
    liver = vol.labels_from_file(sample_labels_path())[18] == 5
    out = tmp_path / "liver.nii.gz"
    args = ["segment", str(sample_ct_path()), "--slice", "18", "--preset", "ct-soft-tissue",
            "--box", *map(str, bbox(liver, 5)), "-o", str(out), "--no-disk-cache"]
    assert main(args) == 0
    saved, source = nib.load(out), nib.load(sample_ct_path())
    assert saved.shape == source.shape
    np.testing.assert_array_equal(saved.affine, source.affine)
    seg = vol.labels_from_file(out)
    assert seg[:18].sum() == 0 and dice(seg[18] > 0, liver) > 0.85


def test_one_volume_frame_for_segment_propagate_and_embed(tmp_path):
    """On a RAS NIfTI, `segment --box` and `propagate --box` address the same slice pixels and
    share cache keys (issue 17: they used to slice differently flipped frames)."""
    vol = read_volume(sample_ct_path())
    box = [str(v) for v in bbox(vol.labels_from_file(sample_labels_path())[18] == 5, 5)]
    cache = tmp_path / "cache"
    common = ["--slice", "18", "--box", *box, "--preset", "ct-soft-tissue",
              "--cache-dir", str(cache)]
    assert main(["segment", str(sample_ct_path()), *common, "-o", str(tmp_path / "s.nii.gz")]) == 0
    files = sorted(cache.rglob("*.npz"))
    assert len(files) == 1
    assert main(["propagate", str(sample_ct_path()), *common, "--max-slices", "0",
                 "-o", str(tmp_path / "p.nii.gz")]) == 0
    assert sorted(cache.rglob("*.npz")) == files  # the same key: propagate encoded nothing new
    seg, prop = (vol.labels_from_file(tmp_path / f"{k}.nii.gz") for k in "sp")
    assert seg[18].any() and np.array_equal(seg > 0, prop > 0)
    assert main(["embed", str(sample_ct_path()), "--preset", "ct-soft-tissue",
                 "--cache-dir", str(cache)]) == 0
    assert files[0].is_file() and len(list(cache.rglob("*.npz"))) == vol.n_slices


def test_eval_json_records(tmp_path, data_dir, capsys):
    out = tmp_path / "eval.json"
    assert main(["eval", str(data_dir), "--datasets", "kvasir_seg", "--json", str(out),
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    records = json.loads(out.read_text())
    assert len(records) == 3
    assert set(records[0]) == {"dataset", "case", "label", "slice", "prompt", "dice"}
    assert all(r["prompt"] == "box" and r["dice"] > 0.9 for r in records)  # measured 0.971 mean
    assert "kvasir_seg" in capsys.readouterr().out


def test_embed_then_cached(tmp_path, capsys):
    volume = read_image(sample_ct_path()).data[:3]
    path = tmp_path / "small.nii.gz"
    nib.save(nib.Nifti1Image(np.transpose(volume, (2, 1, 0)), np.eye(4)), path)
    args = ["embed", str(path), "--cache-dir", str(tmp_path / "cache"), "--preset", "ct-bone"]
    assert main(args) == 0
    assert "3 computed" in capsys.readouterr().out
    assert main(args) == 0
    assert "0 computed, 3 from cache" in capsys.readouterr().out


def test_errors_are_plain_words(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "napari_medsam.cli", "segment", str(tmp_path / "nope.png"),
         "--box", "1", "2", "3", "4", "-o", str(tmp_path / "o.png"), "--no-disk-cache"],
        capture_output=True, text=True,
    )
    assert run.returncode == 2 and "error: File not found" in run.stderr
    assert "Traceback" not in run.stderr
    run = subprocess.run(
        [sys.executable, "-m", "napari_medsam.cli", "segment", str(sample_ct_path()),
         "--model", str(tmp_path / "missing.pth"), "--box", "1", "2", "30", "40",
         "-o", str(tmp_path / "o.nii.gz")],
        capture_output=True, text=True,
    )
    assert run.returncode == 2 and "missing.pth" in run.stderr and "Traceback" not in run.stderr
