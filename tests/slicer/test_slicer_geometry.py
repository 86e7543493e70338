"""Slice axes, RAS <-> slice pixels and the slice merge rules (numpy only)."""

from __future__ import annotations

import numpy as np
import pytest
from MedSAMLib import geometry as geo

# a CT-like grid: LPS-flipped x/y (as DICOM gives), 0.7 mm pixels, 5 mm slices, shifted origin
LPS_CT = np.array([[-0.7, 0, 0, 120.0], [0, -0.7, 0, 95.0], [0, 0, 5.0, -300.0], [0, 0, 0, 1]])


def test_axis_for_normal_follows_the_volume_axes():
    assert geo.axis_for_normal([0, 0, 1], LPS_CT) == 0  # axial view cuts K
    assert geo.axis_for_normal([0, -1, 0], LPS_CT) == 1  # coronal cuts J
    assert geo.axis_for_normal([1, 0, 0], LPS_CT) == 2  # sagittal cuts I
    # a volume acquired sagittally: its K axis points left-right
    sagittal = np.array([[0, 0, 2.0, 0], [1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 0, 1]])
    assert geo.axis_for_normal([1, 0, 0], sagittal) == 0
    with pytest.raises(geo.GeometryError, match="oblique"):
        geo.axis_for_normal([1, 1, 0], LPS_CT)


def test_ras_prompt_round_trip_lands_on_the_voxel():
    shape = (16, 100, 120)
    for axis in (0, 1, 2):
        ijk = np.array([[30.0, 40.0, 7.0], [55.0, 70.0, 7.0]])
        ijk[:, 2 - axis] = 7.0  # both points on slice 7 of this axis
        ras = geo.ijk_to_ras(ijk, LPS_CT)
        prompt = geo.ijk_to_slice(geo.ras_to_ijk(ras, LPS_CT), axis, shape)
        assert prompt.index == 7 and prompt.axis == axis
        rows, cols = geo.in_plane_axes(axis)
        kji = ijk[:, ::-1]
        np.testing.assert_allclose(prompt.points, np.stack([kji[:, cols], kji[:, rows]], 1))
        # the pixel the prompt names is the voxel the points were made from
        volume = np.arange(np.prod(shape)).reshape(shape)
        x, y = np.rint(prompt.points[0]).astype(int)
        k, j, i = np.rint(kji[0]).astype(int)
        assert geo.slice_of(volume, axis, prompt.index)[y, x] == volume[k, j, i]


def test_prompts_off_the_slice_or_volume_are_refused():
    with pytest.raises(geo.GeometryError, match="different slices"):
        geo.ijk_to_slice([[1, 1, 2], [1, 1, 5]], 0, (16, 20, 20))
    with pytest.raises(geo.GeometryError, match="outside the volume"):
        geo.ijk_to_slice([[1, 1, 40]], 0, (16, 20, 20))


def test_stack_and_extent_agree_with_slices():
    volume = np.random.default_rng(0).integers(0, 9, (5, 6, 7))
    for axis in (0, 1, 2):
        stack = geo.stack_for_axis(volume, axis)
        np.testing.assert_array_equal(stack[3], geo.slice_of(volume, axis, 3))
        np.testing.assert_array_equal(geo.stack_to_kji(stack, axis), volume)
        extent = geo.slice_extent(axis, 3, volume.shape)
        i0, i1, j0, j1, k0, k1 = extent
        np.testing.assert_array_equal(
            volume[k0:k1 + 1, j0:j1 + 1, i0:i1 + 1],
            geo.slice_mask_as_kji(geo.slice_of(volume, axis, 3), axis),
        )


def test_merge_slice_modes_touch_only_their_slice():
    rng = np.random.default_rng(1)
    current = (rng.random((4, 8, 9)) > 0.5).astype(np.uint8)
    mask = rng.random((4, 9)) > 0.5  # a slice along J
    replaced = geo.merge_slice(current, mask, 1, 2, "replace")
    added = geo.merge_slice(current, mask, 1, 2, "add")
    removed = geo.merge_slice(current, mask, 1, 2, "remove")
    for out in (replaced, added, removed):
        np.testing.assert_array_equal(np.delete(out, 2, axis=1), np.delete(current, 2, axis=1))
    np.testing.assert_array_equal(replaced[:, 2], mask)
    np.testing.assert_array_equal(added[:, 2], (current[:, 2] > 0) | mask)
    np.testing.assert_array_equal(removed[:, 2], (current[:, 2] > 0) & ~mask)


@pytest.mark.parametrize("matrix", [LPS_CT, np.eye(4), np.array(
    [[0, 0, 2.0, 0], [1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 0, 1]])])  # sagittal acquisition
def test_slice_frame_round_trips_and_names_the_same_voxels(matrix):
    """The core sees every slice in its canonical frame; masks and points map back exactly."""
    shape = (5, 6, 7)
    volume = np.random.default_rng(0).integers(0, 100, shape)
    for axis in (0, 1, 2):
        frame = geo.SliceFrame.of(matrix, axis, shape)
        stack = frame.stack(volume)
        np.testing.assert_array_equal(frame.to_kji(stack), volume)
        for index in range(shape[axis]):
            array_slice = geo.slice_of(volume, axis, index)
            core_slice = stack[frame.core_index(index)]
            np.testing.assert_array_equal(frame.mask_to_array(core_slice), array_slice)
            (x, y), = frame.points_to_core([[2, 1]])
            assert core_slice[int(y), int(x)] == array_slice[1, 2]


def test_slice_frame_is_the_cli_frame(tmp_path):
    """Slicer's slices of a NIfTI are the CLI's / napari's (`core.volume.open_image`), pixel for
    pixel, so embeddings are shared between the front ends."""
    import nibabel as nib

    from napari_medsam.core.volume import open_image

    data = np.random.default_rng(1).integers(0, 255, (7, 6, 5)).astype(np.int16)  # (i, j, k)
    path = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(data, LPS_CT), path)
    frame = geo.SliceFrame.of(LPS_CT, 0, data.T.shape)
    np.testing.assert_array_equal(frame.stack(data.T), open_image(path).data)
