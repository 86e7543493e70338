"""Real NIfTI/PNG/DICOM IO with geometry kept, and intensity presets."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from napari_medsam.core.errors import InputError
from napari_medsam.core.intensity import get_preset, suggest_preset
from napari_medsam.core.io import read_image, write_labels
from napari_medsam.sample import sample_ct_path


def test_nifti_round_trip_keeps_affine(tmp_path):
    ct = read_image(sample_ct_path())
    assert ct.is_volume and ct.data.shape == (30, 101, 122) and ct.data.dtype == np.int16
    labels = np.zeros(ct.data.shape, np.uint8)
    labels[10, 20:30, 40:60] = 3
    out = write_labels(tmp_path / "seg.nii.gz", labels, like=ct)
    back = nib.load(out)
    np.testing.assert_array_equal(back.affine, nib.load(sample_ct_path()).affine)
    assert back.shape == nib.load(sample_ct_path()).shape
    # voxel (x=40..59, y=20..29, z=10) in the file's own order
    arr = np.asarray(back.dataobj)
    assert arr[40:60, 20:30, 10].min() == 3 and arr.sum() == 3 * 200
    np.testing.assert_array_equal(read_image(out).data, labels)


def test_png_round_trip_and_errors(tmp_path):
    labels = np.zeros((20, 30), np.uint8)
    labels[5:9, 3:12] = 2
    out = write_labels(tmp_path / "m.png", labels)
    np.testing.assert_array_equal(read_image(out).data, labels)
    with pytest.raises(InputError, match="do not match"):
        write_labels(
            tmp_path / "x.nii.gz", labels, like=read_image(out).__class__(np.zeros((3, 3)))
        )
    with pytest.raises(InputError, match="Unsupported"):
        write_labels(tmp_path / "x.xyz", labels)
    with pytest.raises(InputError, match="not found"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="not a readable image"):
        read_image(tmp_path / "bad.png")


def test_4d_nifti_is_refused(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 3), np.float32), np.eye(4)), tmp_path / "4d.nii.gz")
    with pytest.raises(InputError, match="4 dimensions"):
        read_image(tmp_path / "4d.nii.gz")


def test_dicom_series(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ct = read_image(sample_ct_path()).data[:4]
    series = generate_uid()
    for z in range(4):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(tmp_path / f"{z}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SeriesInstanceUID, ds.InstanceNumber = series, 4 - z  # shuffled on purpose
        ds.ImagePositionPatient = [0.0, 0.0, 3.0 * z]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [3.0, 3.0], 3.0
        ds.Rows, ds.Columns = ct.shape[1:]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit, ds.PixelRepresentation = 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = (ct[z].astype(np.int32) + 1024).astype(np.int16).tobytes()
        ds.save_as(str(tmp_path / f"{z}.dcm"), enforce_file_format=True)
    vol = read_image(tmp_path)
    assert vol.is_volume and vol.data.shape == ct.shape
    np.testing.assert_allclose(vol.data, ct)  # sorted by position, HU restored
    assert vol.spacing == pytest.approx((3.0, 3.0, 3.0))
    assert pydicom


def test_presets():
    hu = np.array([-1000, -160, 40, 240, 2000], np.int16)
    np.testing.assert_allclose(get_preset("ct-soft-tissue").apply(hu), [0, 0, 0.5, 1, 1])
    custom = get_preset("ct-custom:0,100")
    assert custom.key == "window:0,100" and custom.apply(np.array([0.0]))[0] == 0.5
    with pytest.raises(InputError, match="ct-custom"):
        get_preset("ct-custom:abc")
    with pytest.raises(InputError, match="Unknown intensity preset"):
        get_preset("pet")
    mri = get_preset("mri").apply(np.r_[np.zeros(10), np.linspace(0, 1, 1000), 1e6])
    assert mri.max() == 1.0 and (mri[-1] == 1.0)
    assert suggest_preset(hu, "ct-3d").name == "ct-soft-tissue"
    assert suggest_preset(np.zeros(3, np.uint8), "ct-3d").name == "auto"
    assert suggest_preset(np.zeros(3), "mri-3d").name == "mri"
    assert get_preset("as-is").apply(np.array([0, 255], np.uint8)).tolist() == [0.0, 1.0]
