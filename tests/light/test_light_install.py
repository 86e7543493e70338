"""The light install (`pip install napari-medsam`, no torch) on real images: the bundled sample,
a dev image with a box and with clicks, an automatic head, a volume propagated, eval records.

Runs in its own virtual environment made by scripts/test_light.sh (the wheel, without torch);
skipped wherever torch is installed (the dev environment), since that is not a light install.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
from datahelpers import load_pair

pytestmark = pytest.mark.skipif(importlib.util.find_spec("torch") is not None,
                                reason="the light install has no torch: scripts/test_light.sh")


def cli(*args: str) -> subprocess.CompletedProcess:
    """napari-medsam in a fresh process (a cold start, as a user runs it)."""
    return subprocess.run([sys.executable, "-m", "napari_medsam.cli", *args], capture_output=True,
                          text=True, timeout=900)


def test_demo_runs_headless_without_torch(tmp_path):
    run = cli("demo", "--headless", "--output", str(tmp_path / "overlay.png"))
    assert run.returncode == 0, run.stderr
    mean = float(run.stdout.split("mean Dice ")[1].split()[0])
    assert mean > 0.85 and (tmp_path / "overlay.png").is_file()  # measured 0.93 with torch


def test_segment_box_and_clicks_on_a_dev_image(data_dir, manifest, tmp_path):
    from napari_medsam.core.io import read_image
    from napari_medsam.core.metrics import bbox, dice

    pair = next(p for p in manifest if p["dataset"] == "ph2")
    _, truth = load_pair(data_dir, pair)
    truth = truth > 0
    out = tmp_path / "box.png"
    run = cli("segment", str(data_dir / pair["image"]), "--box", *map(str, bbox(truth, 5)),
              "-o", str(out))
    assert run.returncode == 0, run.stderr
    assert dice(read_image(out).data > 0, truth) > 0.9  # LiteMedSAM box on PH2: 0.949 mean
    ys, xs = np.nonzero(truth)
    i = len(ys) // 2
    run = cli("segment", str(data_dir / pair["image"]), "--point", str(xs[i]), str(ys[i]), "1",
              "-o", str(tmp_path / "click.png"))
    assert run.returncode == 0, run.stderr
    assert dice(read_image(tmp_path / "click.png").data > 0, truth) > 0.8


def test_auto_head_runs_on_onnx(data_dir, manifest, tmp_path):
    from napari_medsam.core.io import read_image
    from napari_medsam.core.metrics import dice

    pair = next(p for p in manifest if p["dataset"] == "camus")
    _, truth = load_pair(data_dir, pair)
    run = cli("auto", str(data_dir / pair["image"]), "--head", "camus-patch", "-o",
              str(tmp_path / "auto.png"))
    assert run.returncode == 0, run.stderr
    labels = read_image(tmp_path / "auto.png").data
    assert dice(labels == 1, truth == 1) > 0.8  # LV: measured 0.92 with torch


def test_no_torch_in_the_process_and_a_plain_message_for_torch_verbs(data_dir, tmp_path):
    code = ("import sys, numpy as np\n"
            "from napari_medsam.core.runtime import RuntimeSpec, build_predictor\n"
            "from napari_medsam.core.session import Session\n"
            "s = Session(build_predictor(RuntimeSpec()))\n"
            "s.set_image(np.random.default_rng(0).random((64, 80)))\n"
            "s.set_box((10, 10, 40, 40))\n"
            "print('torch' in sys.modules, type(s.predictor.backend).__name__)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["False", "OnnxBackend"]
    run = cli("finetune", str(data_dir), "--out", str(tmp_path / "adapter"))
    assert run.returncode == 2 and "pip install 'napari-medsam[torch]'" in run.stderr
    assert "Traceback" not in run.stderr


def test_propagate_and_eval_records(data_dir, tmp_path):
    from napari_medsam.sample import sample_ct_path

    out = tmp_path / "liver.nii.gz"
    run = cli("propagate", str(sample_ct_path()), "--slice", "18", "--box", "30", "30", "80",
              "70", "--preset", "ct-soft-tissue", "--max-slices", "2", "-o", str(out))
    assert run.returncode == 0 and out.is_file(), run.stderr
    records = tmp_path / "eval.json"
    run = cli("eval", str(data_dir), "--datasets", "kvasir_seg", "--json", str(records))
    assert run.returncode == 0, run.stderr
    assert all(r["dice"] > 0.9 for r in json.loads(records.read_text()))
