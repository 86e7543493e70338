"""MedSAMLogic on real volumes in real MRML nodes: box -> segment, RAS prompts, background
embedding, propagation, echo 2D+t from a sequence. Dice is measured against ground truth.

Thresholds sit below the Dice measured here (LiteMedSAM, torch CPU, box = truth box + 5 px):
DeepLesion 2D 0.970 / 0.717 / 0.982 (mean 0.89); propagation on 000009 3D 0.81;
CAMUS LV ED 0.93, ES after time propagation 0.91; TotalSegmentator liver, sagittal slice 0.95.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("slicer_core", reason="needs PyPI's slicer-core: bash scripts/test_slicer.sh")
from MedSAMLib import features, nodes
from MedSAMLib import geometry as geo

from napari_medsam.core.metrics import bbox, dice

pytestmark = pytest.mark.slow
MARGIN = 5


@pytest.fixture
def lesion(scene, logic, nifti_case, read_nifti):
    """load(i) -> (volume node, truth (K, J, I) bool, affine) of DeepLesion case i."""

    def load(index: int):
        image_path, label_path = nifti_case("deeplesion", index)
        volume = logic.loadVolume(str(image_path), scene)
        truth, affine = read_nifti(label_path)
        return volume, truth > 0, affine

    return load


def best_slice(truth: np.ndarray, axis: int = 0) -> int:
    return int(np.argmax(geo.stack_for_axis(truth, axis).sum(axis=(1, 2))))


def test_box_segments_ct_lesions_into_the_volume_geometry(scene, logic, lesion):
    scores = []
    for index in range(3):
        volume, truth, affine = lesion(index)
        np.testing.assert_allclose(nodes.ijk_to_ras_matrix(volume), affine, atol=1e-6)
        z = best_slice(truth)
        seg = nodes.add_segmentation(scene, volume, "lesions")
        sid = nodes.segment_id(seg, "lesion")
        logic.segmentBox(volume, seg, sid, bbox(truth[z], MARGIN), z)
        result = nodes.segment_array(seg, sid, volume)
        assert result.shape == truth.shape
        assert not np.delete(result, z, axis=0).any(), "only the prompted slice is written"
        scores.append(dice(result[z], truth[z]))
        matrix, extent = nodes.labelmap_geometry(seg, sid)
        np.testing.assert_allclose(matrix, affine, atol=1e-6)  # segment on the volume's grid
        assert extent[4] == extent[5] == z
    print("DeepLesion box Dice per case:", [round(s, 3) for s in scores])
    assert min(scores) >= 0.65 and np.mean(scores) >= 0.85


def test_ras_prompts_match_voxel_prompts_on_a_flipped_volume(scene, logic, lesion):
    """Slice views give RAS; on an LPS-flipped, shifted grid the same voxels must be prompted."""
    volume, truth, affine = lesion(2)
    flipped = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    flipped[:3, 3] += [40.0, -25.0, 100.0]
    nodes.set_geometry(volume, flipped)
    z = best_slice(truth)
    box = bbox(truth[z], MARGIN)
    by_voxels = logic.setBox(volume, box, z)
    corners_ijk = [[box[0], box[1], z], [box[2], box[3], z]]
    corners_ras = geo.ijk_to_ras(corners_ijk, nodes.ijk_to_ras_matrix(volume))
    axis = logic.axisForSliceNormal(volume, [0, 0, 1])
    prompt, by_ras = logic.setBoxRAS(volume, corners_ras[0], corners_ras[1], axis)
    assert (prompt.axis, prompt.index) == (0, z)
    np.testing.assert_array_equal(by_ras, by_voxels)
    # a negative click outside the lesion, given in RAS, lands on the same pixel
    ys, xs = np.nonzero(~truth[z])
    click = geo.ijk_to_ras([[xs[0], ys[0], z]], nodes.ijk_to_ras_matrix(volume))[0]
    prompt, _ = logic.addPointRAS(volume, click, False, axis)
    np.testing.assert_allclose(prompt.points[0], [xs[0], ys[0]], atol=1e-6)
    logic.resetPrompts(volume)


def test_background_embedding_then_clicks_and_propagation(scene, logic, lesion):
    volume, truth, _ = lesion(2)
    predictor = logic.getPredictor()
    z = best_slice(truth)
    job = logic.startEmbedding(volume, start=z)
    seen = []
    while not job.poll():
        seen.append(job.done)
        time.sleep(0.05)
    assert job.done == job.total == truth.shape[0] and job.error is None
    assert seen == sorted(seen)
    calls = predictor.encoder_calls
    seg = nodes.add_segmentation(scene, volume, "propagated")
    sid = nodes.segment_id(seg, "lesion")
    logic.segmentBox(volume, seg, sid, bbox(truth[z], MARGIN), z)
    assert predictor.encoder_calls == calls, "the box used the background embedding"
    if not features.has("propagation"):
        pytest.skip("this napari-medsam has no propagation yet")
    start = nodes.segment_array(seg, sid, volume)[z].copy()
    outcome = logic.propagate(volume, seg, sid, z)
    assert predictor.encoder_calls == calls, "propagation reused the cached slices"
    result = nodes.segment_array(seg, sid, volume)
    np.testing.assert_array_equal(result[z], start)  # the drawn slice is kept as it was
    assert outcome.slices and not outcome.cancelled
    score = dice(result, truth)
    print(f"DeepLesion 000009 propagated 3D Dice {score:.3f}; {outcome.summary}")
    assert score >= 0.65
    np.testing.assert_allclose(nodes.labelmap_geometry(seg, sid)[0],
                               nodes.ijk_to_ras_matrix(volume), atol=1e-6)


def test_cancelled_propagation_keeps_everything_and_blocks_prompts(scene, logic, lesion):
    if not features.has("propagation"):
        pytest.skip("this napari-medsam has no propagation yet")
    from MedSAMLib.logic import BusyError

    volume, truth, _ = lesion(0)
    z = best_slice(truth)
    seg = nodes.add_segmentation(scene, volume, "cancelled")
    sid = nodes.segment_id(seg, "lesion")
    logic.segmentBox(volume, seg, sid, bbox(truth[z], MARGIN), z)
    before = nodes.segment_array(seg, sid, volume)
    job = logic.startPropagation(volume, seg, sid, z)
    with pytest.raises(BusyError):  # while it runs (a cancel first may end it at once)
        logic.setBox(volume, bbox(truth[z], MARGIN), z)
    job.cancel()
    outcome = job.wait(timeout=120)
    assert outcome.cancelled
    after = nodes.segment_array(seg, sid, volume)
    assert np.all(after >= before), "nothing drawn before the cancel is lost"
    assert set(np.nonzero(after.any(axis=(1, 2)))[0]) == {z, *outcome.slices}


def test_echo_sequence_box_then_time_propagation(scene, logic, data_dir):
    """Two real CAMUS frames (ED, ES) of one view as a Slicer sequence, segmented as 2D+t."""
    from PIL import Image

    names = ("patient0027_4CH_ED", "patient0027_4CH_ES")
    frames = [np.asarray(Image.open(data_dir / "echo/camus/images" / f"{n}.png")) for n in names]
    truth = np.stack([np.asarray(Image.open(data_dir / "echo/camus/masks" / f"{n}.png")) == 1
                      for n in names])
    frame_matrix = np.diag([0.3, 0.3, 1.0, 1.0])
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "echo")
    for t, frame in enumerate(frames):
        node = nodes.add_volume(scene, frame[None], frame_matrix, f"frame{t}")
        sequence.SetDataNodeAtValue(node, str(t))
        scene.RemoveNode(node)
    volume = logic.volumeFromSequence(sequence)
    seg = nodes.add_segmentation(scene, volume, "echo")
    sid = nodes.segment_id(seg, "LV")
    logic.segmentBox(volume, seg, sid, bbox(truth[0], MARGIN), 0)
    ed = dice(nodes.segment_array(seg, sid, volume)[0], truth[0])
    scores = [round(ed, 3)]
    assert ed >= 0.85
    if features.has("propagation"):
        logic.propagate(volume, seg, sid, 0, mode="time")
        es = dice(nodes.segment_array(seg, sid, volume)[1], truth[1])
        scores.append(round(es, 3))
        assert es >= 0.8
    print("CAMUS LV Dice ED (box), ES (time propagation):", scores)
    exported = logic.exportToSequence(seg, sid, volume, sequence)
    masks = nodes.segment_array(seg, sid, volume)
    for t in range(2):
        frame_seg = exported.GetNthDataNode(t)
        fid = frame_seg.GetSegmentation().GetSegmentIdBySegmentName("LV")
        got = nodes.segment_array(frame_seg, fid, sequence.GetNthDataNode(t))[0]
        np.testing.assert_array_equal(got, masks[t])


def test_sagittal_slices_segment_along_their_own_axis(scene, logic, nifti_case, read_nifti):
    """A box in a sagittal view (array axis 2) writes only that sagittal slice."""
    image_path, label_path = nifti_case("totalseg_example")
    logic.setPreset("ct-abdomen")
    try:
        volume = logic.loadVolume(str(image_path), scene)
        liver = read_nifti(label_path)[0] == 5  # TotalSegmentator output: a silver reference
        axis = logic.axisForSliceNormal(volume, [1, 0, 0])
        assert axis == 2
        index = best_slice(liver, axis)
        target = geo.slice_of(liver, axis, index)
        seg = nodes.add_segmentation(scene, volume, "liver")
        sid = nodes.segment_id(seg, "liver")
        logic.segmentBox(volume, seg, sid, bbox(target, MARGIN), index, axis=axis)
        result = nodes.segment_array(seg, sid, volume)
        assert not np.delete(result, index, axis=2).any()
        score = dice(geo.slice_of(result, axis, index), target)
        print(f"TotalSegmentator liver, sagittal slice {index}: Dice {score:.3f}")
        assert score >= 0.85
    finally:
        logic.setPreset("auto")


def test_fresh_adapter_changes_nothing_and_switches_back(logic, lesion, tmp_path):
    """A LoRA adapter loaded through the Logic is used for the next prompt (a fresh one, B = 0,
    must give the base model's mask); "none" is the base model, None the default (the click
    adapter), both on the same loaded model."""
    pytest.importorskip("peft")
    if not features.has("adapters"):
        pytest.skip("this napari-medsam has no adapters yet")
    from napari_medsam.core.adapters import adapters_of

    volume, truth, _ = lesion(2)
    z = best_slice(truth)
    box = bbox(truth[z], MARGIN)
    logic.setZoom(False)  # whole-slice decodes: what changes is the adapter only
    before = logic.setBox(volume, box, z).copy()
    adapters = adapters_of(logic.getPredictor().model)
    adapters.create("fresh")
    folder = adapters.save("fresh", tmp_path / "fresh")
    adapters.remove("fresh")
    try:
        assert "fresh" in logic.loadAdapter(str(folder))
        assert adapters.active == "fresh"
        np.testing.assert_array_equal(logic.setBox(volume, box, z), before)
        assert logic.loadAdapter("none") == "Using the base model (no adapter)."
        assert adapters.active is None
        assert "click adapter" in logic.loadAdapter(None) and adapters.active == "click"
    finally:
        adapters.remove("fresh")
        logic.adapterPath = None
        logic.setZoom(True)


def test_warm_up_prepares_the_profile_before_the_first_embedding(logic, lesion):
    """The module panel warms its Logic when it opens (`warmInBackground`): the profile's
    sessions are open before the first box, which then runs on that same backend (no second
    copy) and gives the mask of the torch Logic."""
    from MedSAMLib.logic import MedSAMLogic

    if "accurate" not in features.profile_names():
        pytest.skip("this napari-medsam has no ONNX profiles")
    warm = MedSAMLogic(profile="accurate")
    thread = warm.warmInBackground()
    assert thread is not None
    thread.join(300)
    backend = warm._runtime.backend(warm._spec())
    assert {"encoder", *backend.decoders} <= set(backend._sessions)
    volume, truth, _ = lesion(2)
    z = best_slice(truth)
    box = bbox(truth[z], MARGIN)
    mask = warm.setBox(volume, box, z)
    assert warm.getPredictor().backend is backend
    assert warm.warmInBackground() is None  # built: nothing left to prepare
    assert dice(mask, logic.setBox(volume, box, z)) > 0.95
    assert dice(mask, truth[z]) > 0.65



def test_a_deferred_zoom_refines_the_click_off_the_main_thread(scene, logic, lesion,
                                                               monkeypatch):
    """The editor effect's clicks pass deferZoom: a click on a small lesion returns the
    whole-slice mask without an encoder run on the calling thread, and `startZoom`'s job
    (encoded in a thread, finished on the polling one) gives the mask of a click that waits."""
    import threading

    from napari_medsam.core.clicks import next_click
    from napari_medsam.core.embeddings import EmbeddingCache
    from napari_medsam.core.zoom import ZoomPolicy

    predictor = logic.getPredictor()
    monkeypatch.setattr(predictor, "zoom", ZoomPolicy())  # the fixture's predictor has none
    monkeypatch.setattr(predictor, "cache", EmbeddingCache())  # no window encoded before
    volume, truth, _ = lesion(0)
    z = best_slice(truth)
    list(logic.iterEmbedding(volume, slices=[z]))  # the slice itself, as the effect's button
    click, encoded_on = next_click(truth[z]), []
    encode = predictor.compute_embedding

    def recorded(*args, **kwargs):
        encoded_on.append(threading.current_thread() is threading.main_thread())
        return encode(*args, **kwargs)

    monkeypatch.setattr(predictor, "compute_embedding", recorded)
    first = mask = logic.addPoint(volume, click.x, click.y, z, deferZoom=True)
    assert encoded_on == []  # the click ran no encoder
    rounds = 0
    while (job := logic.startZoom(volume)) is not None:
        index, mask = job.wait(timeout=120)
        rounds += 1
        assert index == z
    assert 1 <= rounds <= 3 and encoded_on and not any(encoded_on)
    logic.resetPrompts(volume)
    waited = logic.addPoint(volume, click.x, click.y, z)  # windows cached now: the same path
    np.testing.assert_array_equal(mask, waited)
    print(f"DeepLesion click Dice: whole slice {dice(first, truth[z]):.3f}, zoomed "
          f"{dice(mask, truth[z]):.3f}")
    logic.resetPrompts(volume)
