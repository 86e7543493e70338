"""The dock widget's Fine-tune box: accepted objects are saved, training runs in the background
with progress and validation Dice, "Use this adapter" switches the model; Cancel keeps the old.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

napari = pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from test_widget import WAIT_MS, add_box, make_widget, pair, settle  # noqa: E402

from napari_medsam.core.adapters import adapters_of  # noqa: E402
from napari_medsam.core.corrections import CorrectionStore  # noqa: E402
from napari_medsam.core.metrics import dice  # noqa: E402

pytestmark = pytest.mark.gui
IMAGES = ["patient0027_2CH_ED", "patient0047_4CH_ES", "patient0051_2CH_ES"]


@pytest.fixture
def widget(make_napari_viewer, model, tmp_path, qtbot):
    w = make_widget(make_napari_viewer(), model, tmp_path / "emb")
    w.finetune.set_folder(tmp_path / "project")
    active = adapters_of(model).active
    yield w
    adapters_of(model).activate(active)  # the model is shared with other tests
    w.finetune.cancel()
    w.finetune.wait()
    w.cancel()
    settle(qtbot, w)


def accept_objects(widget, viewer, data_dir, qtbot) -> None:
    """LV and LA of three echo images (three patients), drawn with boxes and accepted."""
    for name in IMAGES:
        image, truth = pair(data_dir, f"echo/camus/images/{name}.png")
        viewer.add_image(image, name=name)
        ann = widget.current
        for label in (1, 3):
            add_box(ann, truth == label)
            settle(qtbot, widget)
            qtbot.waitUntil(lambda ann=ann: ann.preview.data.any(), timeout=WAIT_MS)
            assert widget.accept() is not None


def test_corrections_then_finetune_then_use(widget, data_dir, qtbot):
    viewer, ft = widget.viewer, widget.finetune
    ft.name_edit.setText("echo-test")
    ft.modality_combo.setCurrentText("ultrasound")
    accept_objects(widget, viewer, data_dir, qtbot)
    store = CorrectionStore(ft.folder)
    records = list(store)
    assert len(records) == 6 and ft.count() == 6 and ft.count_label.text() == "6 corrections saved"
    assert {r.source for r in records} == set(IMAGES)
    assert {r.modality for r in records} == {"ultrasound"}
    before = adapters_of(widget.engine.model).active

    ft.start(steps=6)
    assert ft.running and not ft.train_button.isEnabled() and ft.cancel_button.isEnabled()
    ft.wait()
    assert ft.last_error is None, ft.last_error
    assert ft.progress.maximum() == 6 and ft.progress.value() == 6
    assert ft.history and {"box", "click1"} <= set(ft.history[-1])  # live validation Dice
    assert ft.trained is not None and (ft.trained / "adapter_model.safetensors").is_file()
    meta = json.loads((ft.trained / "metadata.json").read_text())
    assert meta["modality"] == "ultrasound" and meta["training_set"]["objects"] >= 4
    assert adapters_of(widget.engine.model).active == before  # training used its own copy
    assert ft.use_button.isEnabled()

    ft.use()
    assert widget.spec().adapter == str(ft.trained)
    image, truth = pair(data_dir, "echo/camus/images/patient0187_4CH_ED.png")
    viewer.add_image(image, name="new")
    ann = widget.current
    add_box(ann, truth == 1)
    settle(qtbot, widget)
    qtbot.waitUntil(lambda: ann.preview.data.any(), timeout=WAIT_MS)
    assert adapters_of(widget.engine.model).active not in (None, before)
    assert dice(ann.preview.data.astype(bool), truth == 1) > 0.85
    assert widget.current.session.predictor.backend.last_gate[1]  # echo: the adapter is used

    # a dermoscopy image is unlike the adapter's echo images: its gate leaves it out, and says so
    image, truth = pair(data_dir, "dermoscopy/ph2/images/IMD002.png")
    viewer.add_image(image, name="skin")
    ann = widget.current
    told, notify = [], ann.notify
    ann.notify = lambda level, text: (told.append(text), notify(level, text))
    add_box(ann, truth > 0)
    settle(qtbot, widget)
    qtbot.waitUntil(lambda: ann.preview.data.any(), timeout=WAIT_MS)
    assert not ann.session.predictor.backend.last_gate[1]
    assert sum("trained on images unlike this one" in t for t in told) == 1
    assert dice(ann.preview.data.astype(bool), truth > 0) > 0.85


def test_cancel_keeps_the_adapter_in_use(widget, data_dir, qtbot):
    ft = widget.finetune
    ft.name_edit.setText("never-saved")
    accept_objects(widget, widget.viewer, data_dir, qtbot)
    before = adapters_of(widget.engine.model).active
    ft.start(steps=500)
    qtbot.waitUntil(lambda: ft.progress.maximum() == 500 and ft.progress.value() >= 1,
                    timeout=WAIT_MS)
    ft.cancel()
    ft.wait()
    assert ft.last_error is not None and "cancelled" in ft.last_error
    assert ft.trained is None and not ft.use_button.isEnabled() and ft.train_button.isEnabled()
    assert not any(p.name == "never-saved" for p in ft._out().parent.glob("*"))
    assert adapters_of(widget.engine.model).active == before


def test_plain_errors(widget, qtbot):
    ft = widget.finetune
    ft.start()
    assert "No corrections" in widget.messages[-1][1] and not ft.running
    ft.name_edit.setText("bad/name")
    CorrectionStore(ft.folder).add(np.zeros((8, 8)), np.ones((8, 8), bool), key="k", label=1)
    ft.start()
    assert "cannot be an adapter name" in widget.messages[-1][1] and not ft.running
