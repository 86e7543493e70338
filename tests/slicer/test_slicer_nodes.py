"""Volumes, segments, the effect's slice labelmaps, .seg.nrrd files and sequences on real MRML."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("slicer_core", reason="needs PyPI's slicer-core: bash scripts/test_slicer.sh")
import slicer
from MedSAMLib import geometry as geo
from MedSAMLib import nodes

LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


@pytest.fixture
def ct(scene, nifti_case, read_nifti):
    """The TotalSegmentator example CT (int16 HU, 3 mm, non-zero origin) and its organ labels."""
    image_path, label_path = nifti_case("totalseg_example")
    array, affine = read_nifti(image_path)
    labels, _ = read_nifti(label_path)
    volume = nodes.add_volume(scene, array, geo.matrix_from_affine(affine), "ct")
    return volume, array, affine, labels


def test_volume_keeps_voxels_and_nifti_geometry(ct):
    volume, array, affine, _ = ct
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(volume), array)
    spacing, origin, directions = geo.spacing_origin_directions(affine)
    np.testing.assert_allclose(volume.GetSpacing(), spacing)
    np.testing.assert_allclose(volume.GetOrigin(), origin)
    np.testing.assert_allclose(nodes.ijk_to_ras_matrix(volume), affine, atol=1e-9)
    # the voxel at IJK (10, 20, 5) sits where nibabel says
    ras = geo.ijk_to_ras([[10, 20, 5]], nodes.ijk_to_ras_matrix(volume))[0]
    np.testing.assert_allclose(ras, (affine @ [10, 20, 5, 1])[:3])


def test_segment_round_trip_is_exact_on_the_volume_grid(scene, ct):
    volume, _, affine, labels = ct
    seg = nodes.add_segmentation(scene, volume)
    liver = (labels == 5).astype(np.uint8)
    sid = nodes.segment_id(seg, "liver")
    nodes.write_segment(seg, sid, volume, liver)
    np.testing.assert_array_equal(nodes.segment_array(seg, sid, volume), liver)
    matrix, extent = nodes.labelmap_geometry(seg, sid)
    np.testing.assert_allclose(matrix, affine, atol=1e-6)
    k, j, i = liver.shape
    assert extent[0] >= 0 and extent[1] <= i - 1 and extent[3] <= j - 1 and extent[5] <= k - 1


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_effect_edits_change_only_their_slice_and_undo(scene, ct, axis):
    """The Segment Editor effect's labelmap math on Slicer's own segment editor logic.

    The effect calls saveStateForUndo() then modifySelectedSegmentByLabelmap() with one-slice
    labelmaps; in Slicer those end in vtkSlicerSegmentEditorLogic, which SliceEditor drives here.
    """
    from MedSAMLib.editing import SliceEditor

    volume, _, _, labels = ct
    seg = nodes.add_segmentation(scene, volume)
    sid = nodes.segment_id(seg, "organ")
    start = (labels == 5).astype(np.uint8)  # liver
    nodes.write_segment(seg, sid, volume, start)
    index = int(np.argmax(geo.stack_for_axis(start, axis).sum(axis=(1, 2))))
    other = geo.slice_of(labels == 1, axis, index) | geo.slice_of(labels == 2, axis, index)
    assert other.any()
    editor = SliceEditor(scene, slicer_app_logic())
    assert editor.logic is not None, "slicer-core 5.13 has vtkSlicerSegmentEditorLogic"
    expected, history = start, [start]
    for mode in ("add", "remove", "replace"):
        editor.apply(volume, seg, sid, other, axis, index, mode)
        expected = geo.merge_slice(expected, other, axis, index, mode)
        np.testing.assert_array_equal(nodes.segment_array(seg, sid, volume), expected, mode)
        history.append(expected)
    for previous in reversed(history[:-1]):  # one undo step per edit, replace included
        assert editor.undo()
        np.testing.assert_array_equal(nodes.segment_array(seg, sid, volume), previous)


@pytest.mark.parametrize("mode", ["add", "remove", "replace"])
def test_fallback_writer_matches_the_editor(scene, ct, mode):
    """Without vtkSlicerSegmentEditorLogic (Slicer < 5.9) the same steps use
    SetBinaryLabelmapToSegment."""
    from MedSAMLib.editing import apply_slice_mask

    volume, _, _, labels = ct
    seg = nodes.add_segmentation(scene, volume)
    sid = nodes.segment_id(seg, "organ")
    start = (labels == 5).astype(np.uint8)
    nodes.write_segment(seg, sid, volume, start)
    mask = geo.slice_of(labels == 1, 0, 12) | geo.slice_of(labels == 5, 0, 12)[::-1]

    def modify(labelmap, operation, extent):
        nodes.apply_slice_labelmap(seg, sid, labelmap, extent, operation)

    apply_slice_mask(volume, seg, mask, 0, 12, mode, lambda: None, modify)
    np.testing.assert_array_equal(nodes.segment_array(seg, sid, volume),
                                  geo.merge_slice(start, mask, 0, 12, mode))


def slicer_app_logic():
    from MedSAMLib.headless import app_logic

    return app_logic()


def test_seg_nrrd_round_trip_with_storage_nodes_and_slicerio(scene, ct, tmp_path):
    import slicerio

    volume, _, affine, labels = ct
    seg = nodes.add_segmentation(scene, volume)
    masks = {"liver": labels == 5, "spleen": labels == 1, "aorta": labels == 52}
    ids = {}
    for name, mask in masks.items():
        ids[name] = nodes.segment_id(seg, name)
        nodes.write_segment(seg, ids[name], volume, mask.astype(np.uint8))
    path = tmp_path / "organs.seg.nrrd"
    writer = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    writer.SetFileName(str(path))
    assert writer.WriteData(seg) == 1

    back = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "back")
    reader = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    reader.SetFileName(str(path))
    assert reader.ReadData(back) == 1
    for name, mask in masks.items():
        sid = back.GetSegmentation().GetSegmentIdBySegmentName(name)
        np.testing.assert_array_equal(nodes.segment_array(back, sid, volume), mask, name)

    # an independent reader: slicerio (voxels in IJK order, geometry in LPS)
    read = slicerio.read_segmentation(str(path))
    np.testing.assert_allclose(read["ijkToLPS"], LPS @ affine, atol=1e-6)
    assert {s["name"] for s in read["segments"]} == set(masks)
    voxels = np.asarray(read["voxels"])
    for segment in read["segments"]:
        layer = voxels[..., segment["layer"]] if voxels.ndim == 4 else voxels
        np.testing.assert_array_equal(
            (layer == segment["labelValue"]).transpose(2, 1, 0), masks[segment["name"]]
        )


def test_sequence_frames_stack_and_export(scene, data_dir):
    """Two real echo frames as a volume sequence -> stacked volume -> segmentation sequence."""
    from PIL import Image

    names = ("patient0027_2CH_ED", "patient0027_2CH_ES")
    frames = [np.asarray(Image.open(data_dir / "echo/camus/images" / f"{n}.png")) for n in names]
    truth = [np.asarray(Image.open(data_dir / "echo/camus/masks" / f"{n}.png")) == 1 for n in names]
    frame_matrix = np.array([[0.3, 0, 0, 5.0], [0, 0.3, 0, -7.0], [0, 0, 1.0, 2.0], [0, 0, 0, 1]])
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "echo")
    sequence.SetIndexName("time")
    sequence.SetIndexUnit("s")
    for t, frame in enumerate(frames):
        node = nodes.add_volume(scene, frame[None], frame_matrix, f"frame{t}")
        sequence.SetDataNodeAtValue(node, f"{0.04 * t:.2f}")
        scene.RemoveNode(node)

    stack, first_matrix, values = nodes.sequence_frames(sequence)
    np.testing.assert_array_equal(stack, np.stack(frames))
    np.testing.assert_allclose(first_matrix, frame_matrix)
    assert values == ["0.00", "0.04"]

    volume = nodes.add_volume(scene, stack, nodes.stacked_geometry(first_matrix), "stacked")
    seg = nodes.add_segmentation(scene, volume)
    sid = nodes.segment_id(seg, "LV")
    nodes.write_segment(seg, sid, volume, np.stack(truth).astype(np.uint8))
    exported = nodes.add_segmentation_sequence(
        scene, nodes.segment_array(seg, sid, volume), sequence, "echo seg", "LV"
    )
    assert exported.GetNumberOfDataNodes() == 2
    for t in range(2):
        frame_seg = exported.GetNthDataNode(t)
        frame_volume = sequence.GetNthDataNode(t)
        fid = frame_seg.GetSegmentation().GetSegmentIdBySegmentName("LV")
        np.testing.assert_array_equal(
            nodes.segment_array(frame_seg, fid, frame_volume)[0], truth[t]
        )
        assert exported.GetNthIndexValue(t) == values[t]
