"""Bad input on the command line, refused before any work: each case asserts exit code 2, an
`error:` line with the words that say what happened, no model loaded (`no_model`) and no output
written."""

from __future__ import annotations

import os
import re

import pytest
from bad_input_helpers import run_cli

BOX = ["20", "18", "48", "44"]  # around the bright disk of good.png (64 x 64)
CT_BOX = ["30", "30", "80", "70"]

# (id, argv with {B} for the bad-input folder and {O} for the output, words in the message)
CASES = [
    # reading images
    ("segment-missing-file", ["segment", "{B}/nope.png", "--box", *BOX, "-o", "{O}/m.png"],
     "not found"),
    ("segment-empty-png", ["segment", "{B}/empty.png", "--box", *BOX, "-o", "{O}/m.png"],
     "empty \\(0 bytes\\)"),
    ("segment-text-as-png", ["segment", "{B}/text.png", "--box", *BOX, "-o", "{O}/m.png"],
     "not a readable image.*starts with '<html>"),
    ("segment-truncated-png", ["segment", "{B}/truncated.png", "--box", *BOX, "-o",
                               "{O}/m.png"], "Could not read .*truncated"),
    ("segment-text-as-nifti", ["segment", "{B}/text.nii.gz", "--box", *BOX, "-o",
                               "{O}/m.nii.gz"], "Could not read text.nii.gz"),
    ("segment-4d-nifti", ["segment", "{B}/4d.nii.gz", "--box", *BOX, "-o", "{O}/m.nii.gz"],
     "is 4D"),
    ("segment-nan-volume", ["segment", "{B}/nan.nii.gz", "--box", *CT_BOX, "-o",
                            "{O}/m.nii.gz"], "1 NaN or infinite voxels"),
    ("segment-huge-nifti", ["segment", "{B}/huge.nii", "--box", *BOX, "-o", "{O}/m.nii.gz"],
     "too large to open here"),
    ("segment-huge-png", ["segment", "{B}/huge.png", "--box", *BOX, "-o", "{O}/m.png"],
     "too large to open"),
    ("segment-not-an-image", ["segment", "{B}/afile", "--box", *BOX, "-o", "{O}/m.png"],
     "No DICOM images|not a readable DICOM"),
    # DICOM series
    ("dicom-one-unreadable-file", ["segment", "{B}/dicom_onebad", "--box", "4", "4", "20", "20",
                                   "-o", "{O}/m.nii.gz"], "2.dcm .*not a readable DICOM"),
    ("dicom-uneven-spacing", ["segment", "{B}/dicom_gap", "--box", "4", "4", "20", "20", "-o",
                              "{O}/m.nii.gz"], "not evenly spaced: 2.dcm to 3.dcm is 6.00 mm"),
    ("dicom-duplicate-slice", ["segment", "{B}/dicom_dup", "--box", "4", "4", "20", "20", "-o",
                               "{O}/m.nii.gz"], "1.dcm and 2.dcm .* same position"),
    # prompts
    ("segment-no-prompt", ["segment", "{B}/good.png", "-o", "{O}/m.png"], "Give a prompt"),
    ("segment-box-outside", ["segment", "{B}/good.png", "--box", "90", "90", "120", "120", "-o",
                             "{O}/m.png"], "box lies outside the image \\(64 x 64"),
    ("segment-box-no-area", ["segment", "{B}/good.png", "--box", "10", "10", "10", "30", "-o",
                             "{O}/m.png"], "no area"),
    ("segment-box-nan", ["segment", "{B}/good.png", "--box", "nan", "1", "30", "30", "-o",
                         "{O}/m.png"], "argument --box: must be a finite number"),
    ("segment-point-label-2", ["segment", "{B}/good.png", "--point", "30", "30", "2", "-o",
                               "{O}/m.png"], "LABEL must be 1 \\(positive\\) or 0"),
    ("segment-point-label-word", ["segment", "{B}/good.png", "--point", "30", "30", "yes", "-o",
                                  "{O}/m.png"], "LABEL must be 1"),
    ("segment-point-outside", ["segment", "{B}/good.png", "--point", "300", "30", "1", "-o",
                               "{O}/m.png"], "point lies outside"),
    ("segment-slice-on-2d", ["segment", "{B}/good.png", "--slice", "3", "--box", *BOX, "-o",
                             "{O}/m.png"], "2D image: it has no slice 3"),
    ("segment-slice-outside", ["segment", "{B}/ct.nii.gz", "--slice", "99", "--box", *CT_BOX,
                               "-o", "{O}/m.nii.gz"], "Slice 99 is outside the volume \\(0 to 7"),
    ("segment-slice-negative", ["segment", "{B}/ct.nii.gz", "--slice", "-1", "--box", *CT_BOX,
                                "-o", "{O}/m.nii.gz"], "argument --slice: must be 0 or more"),
    # outputs, checked before the work
    ("segment-output-folder-slash", ["segment", "{B}/good.png", "--box", *BOX, "-o", "{O}/"],
     "is a folder: give a file name"),
    ("segment-output-existing-folder", ["segment", "{B}/good.png", "--box", *BOX, "-o", "{O}"],
     "is a folder"),
    ("segment-output-txt", ["segment", "{B}/good.png", "--box", *BOX, "-o", "{O}/m.txt"],
     "'.txt': use one of .png"),
    ("segment-output-parent-is-file", ["segment", "{B}/good.png", "--box", *BOX, "-o",
                                       "{B}/afile/m.png"], "afile is a file, not a folder"),
    ("segment-png-output-for-volume", ["segment", "{B}/ct.nii.gz", "--box", *CT_BOX, "-o",
                                       "{O}/m.png"], "output for a volume .* use one of .nii"),
    # model options
    ("segment-device-unknown", ["segment", "{B}/good.png", "--box", *BOX, "--device", "banana",
                                "-o", "{O}/m.png"], "Unknown device 'banana'"),
    ("segment-preset-unknown", ["segment", "{B}/good.png", "--box", *BOX, "--preset", "bright",
                                "-o", "{O}/m.png"], "Unknown intensity preset 'bright'"),
    ("segment-preset-bad-window", ["segment", "{B}/good.png", "--box", *BOX, "--preset",
                                   "ct-custom:40,-5", "-o", "{O}/m.png"], "width must be positive"),
    ("segment-model-missing", ["segment", "{B}/good.png", "--box", *BOX, "--model",
                               "{B}/none.pth", "-o", "{O}/m.png"], "not found"),
    ("segment-adapter-damaged", ["segment", "{B}/good.png", "--box", *BOX, "--adapter",
                                 "{B}/adapter_damaged", "-o", "{O}/m.png"],
     "adapter_model.safetensors is damaged"),
    ("segment-adapter-bad-metadata", ["segment", "{B}/good.png", "--box", *BOX, "--adapter",
                                      "{B}/adapter_badmeta", "-o", "{O}/m.png"],
     "metadata.json is damaged"),
    ("segment-adapter-other-base-no-hash", ["segment", "{B}/good.png", "--box", *BOX,
                                            "--adapter", "{B}/adapter_otherbase", "-o",
                                            "{O}/m.png"],
     "made for the model 'sam_vit_b' .*no weights hash"),
    ("segment-onnx-adapter-other-base", ["segment", "{B}/good.png", "--box", *BOX, "--profile",
                                         "accurate", "--adapter", "{B}/adapter_otherbase", "-o",
                                         "{O}/m.png"], "made for the model 'sam_vit_b'"),
    ("segment-adapter-unknown", ["segment", "{B}/good.png", "--box", *BOX, "--adapter", "nosuch",
                                 "-o", "{O}/m.png"], "No adapter 'nosuch'"),
    ("segment-cache-dir-is-file", ["segment", "{B}/good.png", "--box", *BOX, "--cache-dir",
                                   "{B}/afile", "-o", "{O}/m.png"],
     "embedding cache folder .*afile is a file"),
    # embed
    ("embed-missing-file", ["embed", "{B}/nope.nii.gz"], "not found"),
    ("embed-nan-volume", ["embed", "{B}/nan.nii.gz"], "NaN"),
    ("embed-bad-plane", ["embed", "{B}/ct.nii.gz", "--plane", "oblique"],
     "argument --plane: invalid choice"),
    # propagate
    ("propagate-png-output", ["propagate", "{B}/ct.nii.gz", "--box", *CT_BOX, "-o", "{O}/p.png"],
     "'.png': use one of .nii, .nii.gz"),
    ("propagate-output-parent-is-file", ["propagate", "{B}/ct.nii.gz", "--box", *CT_BOX, "-o",
                                         "{B}/afile/p.nii.gz"], "afile is a file"),
    ("propagate-max-slices-negative", ["propagate", "{B}/ct.nii.gz", "--box", *CT_BOX,
                                       "--max-slices", "-3", "-o", "{O}/p.nii.gz"],
     "argument --max-slices: must be 0 or more, not -3"),
    ("propagate-label-too-large", ["propagate", "{B}/ct.nii.gz", "--box", *CT_BOX, "--label",
                                   "70000", "-o", "{O}/p.nii.gz"], "between 1 and 65535"),
    ("propagate-label-zero", ["propagate", "{B}/ct.nii.gz", "--box", *CT_BOX, "--label", "0",
                              "-o", "{O}/p.nii.gz"], "0 is the background"),
    ("propagate-2d-image", ["propagate", "{B}/good.png", "--box", *BOX, "-o", "{O}/p.nii.gz"],
     "2D image .* not a volume"),
    ("propagate-slice-outside", ["propagate", "{B}/ct.nii.gz", "--slice", "40", "--box", *CT_BOX,
                                 "-o", "{O}/p.nii.gz"], "Slice 40 is outside"),
    ("propagate-box-outside", ["propagate", "{B}/ct.nii.gz", "--box", "500", "500", "600", "600",
                               "-o", "{O}/p.nii.gz"], "box lies outside"),
    # auto
    ("auto-unknown-head", ["auto", "{B}/good.png", "--head", "nosuch", "-o", "{O}/a.png"],
     "No head 'nosuch'"),
    ("auto-output-folder", ["auto", "{B}/good.png", "--head", "camus-patch", "-o", "{O}/"],
     "is a folder"),
    ("auto-slice-on-2d", ["auto", "{B}/good.png", "--head", "camus-patch", "--slice", "2", "-o",
                          "{O}/a.png"], "2D image: it has no slice 2"),
    ("auto-png-output-for-volume", ["auto", "{B}/ct.nii.gz", "--head", "camus-patch", "-o",
                                    "{O}/a.png"], "output for a volume"),
    # eval
    ("eval-no-folder", ["eval", "{B}/nope"], "is not a folder"),
    ("eval-no-manifest", ["eval", "{B}/dicom_good"], "No manifest.json"),
    ("eval-manifest-not-json", ["eval", "{B}/m_notjson"], "is not valid JSON"),
    ("eval-manifest-no-pairs", ["eval", "{B}/m_nopairs"], "lists no image/mask pairs"),
    ("eval-manifest-no-pairs-key", ["eval", "{B}/m_nokey"], 'has no "pairs" list'),
    ("eval-manifest-pair-lacks-keys", ["eval", "{B}/m_badpair"], "Pair 1 .* lacks case, mask"),
    ("eval-manifest-missing-file", ["eval", "{B}/m_missing"], "do not exist, e.g. .*gone.png"),
    ("eval-mask-shape-differs", ["eval", "{B}/m_mismatch"],
     "mask masks/a.png is \\(32, 32\\) but its image .* is \\(64, 64\\)"),
    ("eval-unknown-dataset", ["eval", "{B}/data", "--datasets", "nosuch"],
     "Unknown dataset\\(s\\) nosuch .* it has toy"),
    ("eval-max-cases-negative", ["eval", "{B}/data", "--max-cases", "-1"],
     "argument --max-cases: must be 1 or more"),
    ("eval-max-slices-negative", ["eval", "{B}/data", "--max-slices", "-3"],
     "argument --max-slices"),
    ("eval-max-clicks-zero", ["eval", "{B}/data", "--prompt", "clicks", "--max-clicks", "0"],
     "argument --max-clicks"),
    ("eval-json-is-folder", ["eval", "{B}/data", "--json", "{O}"], "--json file .* is a folder"),
    ("eval-json-parent-is-file", ["eval", "{B}/data", "--json", "{B}/afile/r.json"],
     "afile is a file"),
    # finetune
    ("finetune-steps-zero", ["finetune", "{B}/data", "--steps", "0", "--out", "{O}/ad"],
     "argument --steps: must be 1 or more, not 0"),
    ("finetune-val-fraction", ["finetune", "{B}/data", "--val-fraction", "1.5", "--out",
                               "{O}/ad"], "between 0 and 1"),
    ("finetune-rank-zero", ["finetune", "{B}/data", "--rank", "0", "--out", "{O}/ad"],
     "argument --rank"),
    ("finetune-lr-negative", ["finetune", "{B}/data", "--lr", "-1", "--out", "{O}/ad"],
     "argument --lr: must be more than 0"),
    ("finetune-minutes-negative", ["finetune", "{B}/data", "--minutes", "-1", "--out", "{O}/ad"],
     "argument --minutes"),
    ("finetune-epochs-zero", ["finetune", "{B}/data", "--epochs", "0", "--out", "{O}/ad"],
     "argument --epochs"),
    ("finetune-threads-negative", ["finetune", "{B}/data", "--threads", "-2", "--out", "{O}/ad"],
     "argument --threads"),
    ("finetune-unknown-dataset", ["finetune", "{B}/data", "--datasets", "nosuch", "--out",
                                  "{O}/ad"], "Unknown dataset\\(s\\) nosuch"),
    ("finetune-out-parent-is-file", ["finetune", "{B}/data", "--out", "{B}/afile/ad"],
     "adapter folder .*afile is a file"),
    ("finetune-no-manifest", ["finetune", "{B}/afile", "--out", "{O}/ad"], "not a folder"),
    # train-head
    ("train-head-bad-labels", ["train-head", "{B}/data", "--kind", "patch", "--labels", "x",
                               "-o", "{O}/h"], "must be VALUE or VALUE:NAME"),
    ("train-head-output-parent-is-file", ["train-head", "{B}/data", "--kind", "patch", "--labels",
                                          "1:a", "-o", "{B}/afile/h"], "head folder .* is a file"),
    ("train-head-patch-size", ["train-head", "{B}/data", "--kind", "patch", "--labels", "1:a",
                               "--patch-size", "7", "-o", "{O}/h"], "argument --patch-size"),
    ("train-head-max-images-zero", ["train-head", "{B}/data", "--kind", "patch", "--labels",
                                    "1:a", "--max-images", "0", "-o", "{O}/h"],
     "argument --max-images"),
    # export, adapters, demo, bench, argparse
    ("export-out-parent-is-file", ["export", "--out", "{B}/afile/onnx"], "ONNX folder .* file"),
    ("export-adapter-damaged", ["export", "--profile", "accurate", "--adapter",
                                "{B}/adapter_damaged", "--out", "{O}/onnx"], "is damaged"),
    ("export-calibration-dir-missing", ["export", "--static", "--calibration-dir", "{B}/nope",
                                       "--out", "{O}/onnx"], "not a folder of images"),
    ("adapters-info-unknown", ["adapters", "info", "nosuch"], "No adapter 'nosuch'"),
    ("adapters-info-bad-metadata", ["adapters", "info", "{B}/adapter_badmeta"], "is damaged"),
    ("demo-output-parent-is-file", ["demo", "--headless", "-o", "{B}/afile/o.png"],
     "overlay .*afile is a file"),
    ("demo-output-not-png", ["demo", "--headless", "-o", "{O}/o.jpg"], "use one of .png"),
    ("bench-threads-zero", ["bench", "--threads", "0"], "argument --threads"),
    ("unknown-verb", ["segmnt", "x"], "invalid choice: 'segmnt'"),
]


@pytest.mark.parametrize("argv, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refused_before_work(argv, words, bad, tmp_path, capsys, no_model):
    out = tmp_path / "out"
    out.mkdir()
    before = set(os.listdir(bad))
    code, stdout, stderr = run_cli(capsys, *[a.format(B=bad, O=out) for a in argv])
    assert code == 2, (stdout, stderr)
    assert "error:" in stderr and "Traceback" not in stderr
    assert re.search(words, stderr), stderr
    assert not any(word in stderr for word in ("backend", "plugin", "imageio", "type ''"))
    assert os.listdir(out) == [], "nothing is written"
    assert set(os.listdir(bad)) == before, "no input folder gains a file"


def test_read_only_output_folder(bad, tmp_path, capsys, monkeypatch, no_model):
    """A folder that cannot be written is refused before work (root writes anywhere: there the
    operating system's refusal is simulated)."""
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o555)
    if os.access(locked, os.W_OK):
        import napari_medsam.core.checks as checks

        def refuse(folder):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(checks, "_try_write", refuse)
    try:
        code, _, err = run_cli(capsys, "segment", bad / "good.png", "--box", *BOX, "-o",
                               locked / "m.png")
    finally:
        os.chmod(locked, 0o755)
    assert code == 2 and "is not writable (Permission denied)" in err
    assert list(locked.iterdir()) == []


def test_cuda_without_gpu_is_a_clear_error(bad, tmp_path, capsys, no_model):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code, _, err = run_cli(capsys, "segment", bad / "good.png", "--box", *BOX, "--device",
                           "cuda", "-o", tmp_path / "m.png")
    assert code == 2 and "sees no CUDA GPU" in err and "--device cpu" in err
    assert not (tmp_path / "m.png").exists()


def test_memory_estimate_refuses_before_reading(bad, tmp_path, capsys, monkeypatch, no_model):
    """An image whose working copies would not fit in the free memory is refused with its size
    (here the free memory is set to 1 MB; a 512 x 512 image needs about 5 MB)."""
    monkeypatch.setenv("NAPARI_MEDSAM_MEMORY", str(2**20))
    code, _, err = run_cli(capsys, "segment", bad / "big.png", "--box", *BOX, "-o",
                           tmp_path / "m.png")
    assert code == 2 and "big.png is too large to open here: 512 x 512 pixels" in err
    assert "and 1.0 MiB of memory is free" in err
