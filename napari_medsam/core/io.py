"""Read and write images, volumes and label maps: NIfTI (nibabel), PNG/TIFF/BMP/JPEG, DICOM.

Volumes are handed out as (Z, Y, X) numpy arrays (one 2D slice per Z, the way napari and Slicer's
`arrayFromVolume` hold them) together with the file's affine, so label maps written back overlay
the original exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .atomic import atomic_write_path
from .errors import InputError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass
class ImageData:
    """Pixels plus geometry.

    data: (H, W), (H, W, 3) for 2D images, (Z, Y, X) for volumes.
    affine: 4x4 voxel (i, j, k) -> world mm matrix of the file's own (x, y, z) array order.
    is_volume: True for 3D data (a stack of slices).
    """

    data: np.ndarray
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))
    is_volume: bool = False
    path: str = ""
    spacing: tuple[float, ...] = (1.0, 1.0)
    header: object = None

    @property
    def n_slices(self) -> int:
        return self.data.shape[0] if self.is_volume else 1

    def write_labels(self, path: str | Path, labels: np.ndarray) -> Path:
        """Write labels drawn on this image (same layout as `data`) with its geometry."""
        return write_labels(path, labels, like=self)

    def labels_from_file(self, path: str | Path) -> np.ndarray:
        """A label file of this image, in the layout of `data`."""
        return np.asarray(read_image(path).data)

    def describe(self) -> str:
        if self.is_volume:
            return f"{self.n_slices} slices of {self.data.shape[2]} x {self.data.shape[1]} pixels"
        kind = "colour" if self.data.ndim == 3 else "gray"
        return f"{kind} image of {self.data.shape[1]} x {self.data.shape[0]} pixels"


def _suffix(path: str | Path) -> str:
    name = str(path).lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def read_image(path: str | Path) -> ImageData:
    """Read a 2D image, a NIfTI volume or a DICOM file/series folder."""
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"File not found: {path}")
    suffix = _suffix(path)
    try:
        if suffix in NIFTI_SUFFIXES:
            return _read_nifti(path)
        if path.is_dir() or suffix in (".dcm", ""):
            return _read_dicom(path)
        if suffix in IMAGE_SUFFIXES:
            return _read_2d(path)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"Could not read {path}: {exc}") from exc
    raise InputError(
        f"Unsupported file type '{suffix}' for {path.name}: use NIfTI (.nii/.nii.gz), "
        "PNG/TIFF/BMP/JPEG or a DICOM series folder."
    )


def read_pixels(path: str | Path) -> np.ndarray:
    """The pixels of a PNG/JPEG/BMP (Pillow) or TIFF (tifffile: a page stack stays (pages, H,
    W)) file: gray (H, W), colour (H, W, 3|4); palette images get their colours."""
    if _suffix(path) in (".tif", ".tiff"):
        import tifffile

        return np.asarray(tifffile.imread(str(path)))
    from PIL import Image

    with Image.open(path) as img:
        if img.mode == "P":
            img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        elif img.mode in ("LA", "1"):
            img = img.convert("L")
        elif img.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
            img = img.convert("RGB")
        return np.asarray(img)


def _read_2d(path: Path) -> ImageData:
    data = read_pixels(path)
    if data.ndim == 3 and data.shape[-1] == 4:
        data = data[..., :3]
    if data.ndim == 3 and data.shape[-1] not in (3,):
        return ImageData(data=data, is_volume=True, path=str(path), spacing=(1.0, 1.0, 1.0))
    return ImageData(data=data, is_volume=False, path=str(path))


def _read_nifti(path: Path) -> ImageData:
    import nibabel as nib

    img = nib.load(str(path))
    arr = np.asanyarray(img.dataobj)
    if arr.ndim == 4 and arr.shape[3] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise InputError(
            f"{path.name} has {arr.ndim} dimensions {arr.shape}; napari-medsam reads 2D images "
            "and 3D volumes (or 2D+t as T slices). Split multi-channel/4D files first."
        )
    if (
        arr.dtype.kind == "f"
        or img.dataobj.slope not in (1, None)
        or img.dataobj.inter not in (0, None)
    ):
        arr = np.asarray(img.get_fdata(dtype=np.float32))
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    data = np.ascontiguousarray(np.transpose(arr, (2, 1, 0)))
    is_volume = data.shape[0] > 1
    return ImageData(
        data=data if is_volume else data[0],
        affine=np.asarray(img.affine, dtype=np.float64),
        is_volume=is_volume,
        path=str(path),
        spacing=zooms[::-1],
        header=img.header,
    )


def _read_dicom(path: Path) -> ImageData:
    try:
        import pydicom
    except ImportError as exc:
        raise InputError("Reading DICOM needs pydicom: pip install pydicom") from exc
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    slices = []
    for file in files:
        try:
            ds = pydicom.dcmread(str(file))
        except Exception:
            continue
        if "PixelData" in ds:
            slices.append(ds)
    if not slices:
        raise InputError(f"No DICOM images found in {path}.")
    if len(slices) == 1 and int(getattr(slices[0], "NumberOfFrames", 1)) > 1:
        ds = slices[0]
        frames = ds.pixel_array.astype(np.float32) * float(getattr(ds, "RescaleSlope", 1))
        frames += float(getattr(ds, "RescaleIntercept", 0))
        if frames.ndim == 4:  # colour cine: keep luminance
            frames = frames.mean(axis=-1)
        return ImageData(data=frames, is_volume=True, path=str(path), spacing=(1.0, 1.0, 1.0))
    slices.sort(key=lambda d: int(d.get("InstanceNumber", 0) or 0))
    if all(hasattr(d, "ImagePositionPatient") for d in slices):
        slices.sort(key=lambda d: float(np.dot(_dicom_normal(d), d.ImagePositionPatient)))
    vol = np.stack(
        [
            d.pixel_array.astype(np.float32) * float(getattr(d, "RescaleSlope", 1))
            + float(getattr(d, "RescaleIntercept", 0))
            for d in slices
        ]
    )
    affine = _dicom_affine(slices)
    spacing = tuple(float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))[::-1]
    if len(slices) == 1:
        return ImageData(data=vol[0], affine=affine, path=str(path), spacing=spacing[1:])
    return ImageData(data=vol, affine=affine, is_volume=True, path=str(path), spacing=spacing)


def _dicom_normal(ds) -> np.ndarray:
    o = np.asarray(ds.ImageOrientationPatient, dtype=float)
    return np.cross(o[:3], o[3:])


def _dicom_affine(slices) -> np.ndarray:
    """Voxel (col, row, slice) -> RAS world; DICOM is LPS so x and y flip sign."""
    ds = slices[0]
    if not hasattr(ds, "ImageOrientationPatient"):
        return np.eye(4)
    o = np.asarray(ds.ImageOrientationPatient, dtype=float)
    row_sp, col_sp = (float(v) for v in ds.PixelSpacing)
    pos0 = np.asarray(ds.ImagePositionPatient, dtype=float)
    if len(slices) > 1:
        step = (np.asarray(slices[-1].ImagePositionPatient, dtype=float) - pos0) / (len(slices) - 1)
    else:
        step = _dicom_normal(ds) * float(getattr(ds, "SliceThickness", 1.0))
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = o[:3] * col_sp, o[3:] * row_sp, step, pos0
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def write_labels(path: str | Path, labels: np.ndarray, like: ImageData | None = None) -> Path:
    """Write a label map atomically: NIfTI with the source's affine, or PNG/TIFF for 2D.

    Args:
        path: output file (.nii/.nii.gz, .png, .tif).
        labels: (H, W) or (Z, Y, X) integer labels in the same layout as `like.data`.
        like: the image the labels belong to (geometry is copied from it).
    """
    path = Path(path).expanduser()
    labels = np.asarray(labels)
    if like is not None:
        expected = like.data.shape[:3] if like.is_volume else like.data.shape[:2]
        if labels.shape != tuple(expected):
            raise InputError(f"Labels {labels.shape} do not match the image {tuple(expected)}.")
    dtype = np.uint8 if labels.max(initial=0) < 256 and labels.min(initial=0) >= 0 else np.int32
    labels = labels.astype(dtype if labels.max(initial=0) < 65536 else np.int32)
    suffix = _suffix(path)
    if suffix not in NIFTI_SUFFIXES + IMAGE_SUFFIXES:
        raise InputError(f"Unsupported output type '{suffix}': use .nii.gz, .png or .tif.")
    if suffix in IMAGE_SUFFIXES and labels.ndim != 2:
        raise InputError("PNG/TIFF output holds a 2D label map; use .nii.gz for a volume.")

    def write(tmp: Path) -> None:
        if suffix in NIFTI_SUFFIXES:
            import nibabel as nib

            vol = labels if labels.ndim == 3 else labels[None]
            arr = np.transpose(vol, (2, 1, 0))
            affine = like.affine if like is not None else np.eye(4)
            header = None
            if like is not None and like.header is not None:
                header = like.header.copy()
                header.set_data_dtype(arr.dtype)
                header.set_slope_inter(1, 0)
            img = nib.Nifti1Image(arr, affine, header=header)
            img.set_qform(affine, code=1)
            img.set_sform(affine, code=1)
            nib.save(img, str(tmp))
        else:
            from PIL import Image

            out = labels.astype(np.uint8 if labels.max(initial=0) < 256 else np.uint16)
            Image.fromarray(out).save(str(tmp), format="PNG" if suffix == ".png" else "TIFF")

    atomic_write_path(path, write)
    return path


def read_labels(path: str | Path) -> np.ndarray:
    """Read a label map in the same layout `read_image` gives."""
    data = read_image(path).data
    return np.asarray(data)
