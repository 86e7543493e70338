"""Volume and 2D+t IO: anatomical planes from the affine, exact mapping back, clear errors."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from napari_medsam.core.errors import InputError
from napari_medsam.core.volume import plane_reorientation, read_sequence, read_volume

TOTALSEG = "ct/totalseg_example/images/example_ct_sm.nii.gz"
TOTALSEG_LABELS = "ct/totalseg_example/labels/example_ct_sm.nii.gz"
CAMUS = "echo/camus/images/patient0027_2CH_{}.png"


def _world(affine: np.ndarray, ijk) -> np.ndarray:
    return (affine @ np.r_[np.asarray(ijk, float), 1.0])[:3]


def _reoriented_copy(src, dst, flip_i: bool = True, swap_ij: bool = True) -> None:
    """Write the same anatomy stored differently: i flipped and/or i, j swapped."""
    img = nib.load(str(src))
    arr, aff = np.asarray(img.dataobj), img.affine.copy()
    if flip_i:
        arr = arr[::-1]
        aff = aff @ np.array([[-1, 0, 0, arr.shape[0] - 1], [0, 1, 0, 0], [0, 0, 1, 0],
                              [0, 0, 0, 1]], float)
    if swap_ij:
        arr = np.transpose(arr, (1, 0, 2))
        aff = aff[:, [1, 0, 2, 3]]
    nib.save(nib.Nifti1Image(np.ascontiguousarray(arr), aff), str(dst))


def test_axial_display_is_anatomical(data_dir):
    vol = read_volume(data_dir / TOTALSEG, "axial")
    assert vol.data.shape == (30, 101, 122)
    aff = vol.affine  # displayed (slice, row, col) -> world RAS
    z_top, z_bottom = _world(aff, (29, 50, 60))[2], _world(aff, (0, 50, 60))[2]
    assert z_top > z_bottom  # slices run feet -> head
    assert _world(aff, (10, 0, 60))[1] > _world(aff, (10, 100, 60))[1]  # anterior at the top
    assert _world(aff, (10, 50, 0))[0] > _world(aff, (10, 50, 121))[0]  # patient right on left
    # each displayed voxel is the stored voxel at the same world position
    src = vol.source
    for s, r, c in [(0, 0, 0), (29, 100, 121), (7, 33, 90)]:
        i, j, k = np.round(np.linalg.solve(src.affine, np.r_[_world(aff, (s, r, c)), 1])[:3])
        assert vol.data[s, r, c] == src.data[int(k), int(j), int(i)]
    assert vol.spacing == pytest.approx((3.0, 3.0, 3.0))


def test_coronal_and_sagittal_planes(data_dir):
    cor = read_volume(data_dir / TOTALSEG, "coronal")
    sag = read_volume(data_dir / TOTALSEG, "sagittal")
    assert cor.data.shape == (101, 30, 122) and sag.data.shape == (122, 30, 101)
    for vol in (cor, sag):  # head at the top of the screen
        assert _world(vol.affine, (5, 0, 5))[2] > _world(vol.affine, (5, 29, 5))[2]
    assert "coronal" in cor.describe() and "feet" in cor.describe()


def test_reoriented_file_gives_the_same_display(data_dir, tmp_path):
    """A file stored flipped and transposed shows the same slices and maps labels back exactly."""
    moved = tmp_path / "moved.nii.gz"
    _reoriented_copy(data_dir / TOTALSEG, moved)
    ref, other = read_volume(data_dir / TOTALSEG), read_volume(moved)
    assert other.reorientation != ref.reorientation
    np.testing.assert_array_equal(ref.data, other.data)
    np.testing.assert_allclose(ref.affine, other.affine)
    labels = read_volume(data_dir / TOTALSEG_LABELS).data
    out = other.write_labels(tmp_path / "labels.nii.gz", labels)
    saved = nib.load(str(out))
    np.testing.assert_array_equal(saved.affine, nib.load(str(moved)).affine)
    assert saved.shape == nib.load(str(moved)).shape
    expected = tmp_path / "expected.nii.gz"
    _reoriented_copy(data_dir / TOTALSEG_LABELS, expected)
    np.testing.assert_array_equal(np.asarray(saved.dataobj), np.asarray(nib.load(expected).dataobj))


def test_round_trip_is_exact_for_every_plane(data_dir):
    vol = read_volume(data_dir / TOTALSEG)
    for plane in ("axial", "coronal", "sagittal", "array"):
        reo = plane_reorientation(vol.source.affine, plane)
        np.testing.assert_array_equal(reo.to_stored(reo.to_display(vol.source.data)),
                                      vol.source.data)


def test_bad_volume_inputs(data_dir, tmp_path):
    four_d = tmp_path / "four_d.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4, 3), np.int16), np.eye(4)), str(four_d))
    with pytest.raises(InputError, match="4D"):
        read_volume(four_d)
    with pytest.raises(InputError, match="2D image"):
        read_volume(data_dir / CAMUS.format("ED"))
    one = tmp_path / "one_slice.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 1), np.int16), np.eye(4)), str(one))
    with pytest.raises(InputError, match="2D image|single slice"):
        read_volume(one)
    with pytest.raises(InputError, match="plane"):
        read_volume(data_dir / TOTALSEG, "oblique")
    vol = read_volume(data_dir / TOTALSEG)
    with pytest.raises(InputError, match="outside"):
        vol.check_slice(30)
    with pytest.raises(InputError, match="do not match"):
        vol.to_source(np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(InputError, match="not found"):
        read_sequence(tmp_path / "missing")


def _camus_frames(data_dir) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.open(data_dir / CAMUS.format(p))) for p in ("ED", "ES")])


def test_sequence_from_folder_nifti_and_dicom(data_dir, tmp_path):
    from PIL import Image

    frames = _camus_frames(data_dir)  # (T, H, W) real echo frames
    folder = tmp_path / "frames"
    folder.mkdir()
    for t, name in enumerate(["frame_2.png", "frame_10.png"]):  # natural order, not text order
        Image.fromarray(frames[t]).save(folder / name)
    seq = read_sequence(folder)
    assert seq.kind == "sequence" and seq.data.shape == frames.shape
    np.testing.assert_array_equal(seq.data, frames)

    for shape in ("xyt", "xy1t"):
        arr = np.transpose(frames, (2, 1, 0))
        arr = arr[:, :, None, :] if shape == "xy1t" else arr
        path = tmp_path / f"{shape}.nii.gz"
        nib.save(nib.Nifti1Image(arr, np.eye(4)), str(path))
        np.testing.assert_array_equal(read_sequence(path).data, frames)

    dcm = tmp_path / "cine.dcm"
    _write_multiframe_dicom(dcm, frames)
    np.testing.assert_array_equal(read_sequence(dcm).data, frames)

    Image.fromarray(frames[0][:50]).save(folder / "frame_11.png")
    with pytest.raises(InputError, match="same size"):
        read_sequence(folder)
    with pytest.raises(InputError, match="single frame"):
        read_sequence(data_dir / CAMUS.format("ED"))


def _write_multiframe_dicom(path, frames: np.ndarray) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, UltrasoundMultiFrameImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UltrasoundMultiFrameImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    ds.NumberOfFrames, ds.Rows, ds.Columns = frames.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.ascontiguousarray(frames, dtype=np.uint8).tobytes()
    ds.save_as(str(path), enforce_file_format=True)


def test_stack_without_geometry_is_shown_as_stored(data_dir, tmp_path):
    import tifffile

    stack = read_volume(data_dir / TOTALSEG).data[:4]
    path = tmp_path / "stack.tif"
    tifffile.imwrite(str(path), stack)
    vol = read_volume(path)
    assert vol.reorientation.is_identity
    np.testing.assert_array_equal(vol.data, stack)
    assert read_volume(path, "coronal").data.shape == (stack.shape[1], 4, stack.shape[2])
