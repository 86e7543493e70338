"""Read and write images, volumes and label maps: NIfTI (nibabel), PNG/TIFF/BMP/JPEG, DICOM.

Volumes are handed out as (Z, Y, X) numpy arrays (one 2D slice per Z, the way napari and Slicer's
`arrayFromVolume` hold them) together with the file's affine, so label maps written back overlay
the original exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import checks
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
    W)) file: gray (H, W), colour (H, W, 3|4); palette images get their colours. The header is
    checked first: an empty or text file, or one too large for memory, says so."""
    path = Path(path)
    kind = checks.image_file(path)  # an empty or text file says so, not "no backend"
    if kind.endswith("TIFF"):
        import tifffile

        with tifffile.TiffFile(str(path)) as tif:
            series = tif.series[0]
            checks.fits_in_memory(series.shape, np.dtype(series.dtype).itemsize, path.name)
            return np.asarray(tif.asarray())
    from PIL import Image

    try:
        img = Image.open(path)  # reads the header only
    except Image.DecompressionBombError as exc:
        raise InputError(f"{path.name} is too large to open safely ({exc}). Crop or "
                         "downsample it first.") from None
    with img:
        bands = len(img.getbands())
        depth = 2 if img.mode.startswith("I;16") else (4 if img.mode in ("I", "F") else 1)
        shape = (img.height, img.width) + ((bands,) if bands > 1 else ())
        checks.fits_in_memory(shape, depth, path.name, volume=False)
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
    scaled = img.dataobj.slope not in (1, None) or img.dataobj.inter not in (0, None)
    itemsize = 4 if scaled else np.dtype(img.get_data_dtype()).itemsize
    checks.fits_in_memory(img.shape, itemsize, path.name, volume=True)
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
    """A DICOM file or series folder. Every file that should be DICOM must read, the slices must
    be one series of one size, evenly spaced: otherwise a clear error names the file, never a
    volume with a slice silently left out and the wrong spacing."""
    try:
        import pydicom
    except ImportError as exc:
        raise InputError("Reading DICOM needs pydicom: pip install pydicom") from exc
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")) \
        if path.is_dir() else [path]
    slices = []
    for file in files:
        try:
            ds = pydicom.dcmread(str(file))
        except Exception as exc:
            if path.is_dir() and _suffix(file) not in (".dcm", ".dicom", ".ima", ""):
                continue  # notes, thumbnails... beside the series
            raise InputError(
                f"{file.name} in {path} is not a readable DICOM file ({type(exc).__name__}: "
                f"{exc}). Remove it from the folder or export the series again: a volume read "
                "without it would lose a slice and get the wrong spacing."
            ) from None
        if "PixelData" in ds:
            slices.append((file, ds))
    if not slices:
        raise InputError(f"No DICOM images found in {path}.")
    if len(slices) == 1 and int(getattr(slices[0][1], "NumberOfFrames", 1)) > 1:
        ds = slices[0][1]
        checks.fits_in_memory((int(ds.NumberOfFrames), int(ds.Rows), int(ds.Columns)), 4,
                              path.name, volume=True)
        frames = _pixels(*slices[0], path).astype(np.float32)
        if frames.ndim == 4:  # colour cine: keep luminance
            frames = frames.mean(axis=-1)
        return ImageData(data=frames, is_volume=True, path=str(path), spacing=(1.0, 1.0, 1.0))
    _check_series(slices, path)
    checks.fits_in_memory((len(slices), int(slices[0][1].Rows), int(slices[0][1].Columns)), 4,
                          path.name, volume=len(slices) > 1)
    slices.sort(key=lambda f: int(f[1].get("InstanceNumber", 0) or 0))
    if all(hasattr(d, "ImagePositionPatient") for _, d in slices):
        slices.sort(key=lambda f: float(np.dot(_dicom_normal(f[1]), f[1].ImagePositionPatient)))
        _check_spacing(slices, path)
    vol = np.stack([_pixels(file, d, path) for file, d in slices])
    slices = [d for _, d in slices]
    affine = _dicom_affine(slices)
    spacing = tuple(float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))[::-1]
    if len(slices) == 1:
        return ImageData(data=vol[0], affine=affine, path=str(path), spacing=spacing[1:])
    return ImageData(data=vol, affine=affine, is_volume=True, path=str(path), spacing=spacing)


def _pixels(file: Path, ds, folder: Path) -> np.ndarray:
    """One file's pixels in stored units (rescale slope and intercept applied)."""
    try:
        pixels = ds.pixel_array.astype(np.float32)
    except Exception as exc:
        raise InputError(f"The pixels of {file.name} in {folder} cannot be decoded "
                         f"({type(exc).__name__}: {exc}). Export the series again (an "
                         "uncompressed transfer syntax always reads).") from None
    return pixels * float(getattr(ds, "RescaleSlope", 1)) + float(
        getattr(ds, "RescaleIntercept", 0))


def _check_series(slices: list, folder: Path) -> None:
    """One series, one image size."""
    series = {str(d.get("SeriesInstanceUID", "")) for _, d in slices}
    if len(series) > 1:
        raise InputError(f"{folder} holds {len(series)} DICOM series: put each series in a "
                         "folder of its own and open one.")
    first_file, first = slices[0]
    size = (int(first.Rows), int(first.Columns))
    for file, ds in slices[1:]:
        if (int(ds.Rows), int(ds.Columns)) != size:
            raise InputError(f"{file.name} is {ds.Columns} x {ds.Rows} pixels but "
                             f"{first_file.name} is {size[1]} x {size[0]}: the slices of "
                             f"{folder} do not belong to one volume.")


def _check_spacing(slices: list, folder: Path) -> None:
    """Sorted slices must be evenly spaced: a gap means a missing slice (the volume would be
    stretched), a repeated position a duplicate or a mixed-up series."""
    if len(slices) < 3:
        positions = [float(np.dot(_dicom_normal(d), d.ImagePositionPatient)) for _, d in slices]
        if len(slices) == 2 and abs(positions[1] - positions[0]) < 1e-4:
            raise InputError(f"{slices[0][0].name} and {slices[1][0].name} in {folder} are at the "
                             "same position: remove the duplicate.")
        return
    positions = np.array([float(np.dot(_dicom_normal(d), d.ImagePositionPatient))
                          for _, d in slices])
    steps = np.diff(positions)
    usual = float(np.median(steps))
    for i, step in enumerate(steps):
        a, b = slices[i][0].name, slices[i + 1][0].name
        if abs(step) < 1e-4:
            raise InputError(f"{a} and {b} in {folder} are at the same position: remove the "
                             "duplicate (or the second series mixed into the folder).")
        if abs(step - usual) > 0.05 * abs(usual) + 1e-3:
            raise InputError(
                f"The slices of {folder} are not evenly spaced: {a} to {b} is {step:.2f} mm, "
                f"the others {usual:.2f} mm. A slice is missing or damaged; export the series "
                "again (a volume read this way would get the wrong spacing)."
            )


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
