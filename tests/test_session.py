"""Session verbs both front ends drive: prompts, undo, commit without overwriting, cancel."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medsam.core.errors import CancelledError, InputError, NoImageError
from napari_medsam.core.io import read_image
from napari_medsam.core.metrics import bbox, dice
from napari_medsam.core.session import Session
from napari_medsam.sample import sample_ct_path, sample_labels_path


@pytest.fixture(scope="module")
def ct():
    return read_image(sample_ct_path()).data, np.asarray(read_image(sample_labels_path()).data)


def test_commit_two_objects_undo_and_never_overwrite(predictor, ct):
    volume, ref = ct
    s = Session(predictor, preset="ct-soft-tissue")
    s.set_image(volume)
    assert s.is_volume and s.labels.shape == volume.shape
    s.set_slice(18)
    liver, spleen = ref[18] == 5, ref[18] == 1
    mask = s.set_box(bbox(liver, 5))
    assert dice(mask, liver) > 0.85
    s.add_point(*np.argwhere(liver)[0][::-1], positive=True)
    assert len(s._history) == 3
    assert s.undo() is mask  # back to the box-only preview
    assert s.commit() == 1
    assert s.preview is None  # prompts cleared after commit
    s.set_box(bbox(spleen, 5))
    assert s.commit() == 2
    assert set(np.unique(s.labels[18])) == {0, 1, 2}
    # a third object drawn over the liver keeps the liver's pixels
    liver_pixels = (s.labels[18] == 1).sum()
    s.set_box([0, 0, volume.shape[2] - 1, volume.shape[1] - 1])
    s.commit()
    assert (s.labels[18] == 1).sum() == liver_pixels
    assert (s.labels[:18] == 0).all() and (s.labels[19:] == 0).all()


def test_embed_all_order_progress_and_cancel(predictor, ct):
    volume, _ = ct
    s = Session(predictor, preset="ct-soft-tissue")
    s.set_image(volume[:6])
    s.set_slice(3)
    assert s.slice_order() == [3, 4, 2, 5, 1, 0]
    seen = []
    with pytest.raises(CancelledError):
        s.embed_all(progress=lambda d, t: seen.append(d), cancel=lambda: len(seen) >= 2)
    assert seen == [1, 2] and s.is_embedded(3) and s.is_embedded(4) and not s.is_embedded(0)


def test_session_errors(predictor):
    s = Session(predictor)
    with pytest.raises(NoImageError):
        s.set_box([0, 0, 4, 4])
    s.set_image(np.random.default_rng(1).integers(0, 255, (5, 40, 40)).astype(np.uint8))
    with pytest.raises(InputError, match="outside the volume"):
        s.set_slice(9)
    with pytest.raises(InputError, match="Nothing to commit"):
        s.commit()
    with pytest.raises(InputError, match="NaN"):
        s.set_image(np.full((3, 8, 8), np.nan, np.float32))
