"""Volumes and 2D+t sequences for slice-by-slice work.

A volume is sliced along an anatomical plane (axial, coronal, sagittal) chosen from the file's
affine, not from its array axes, and shown in one canonical radiological orientation whatever the
scanner's storage order. The mapping is a pure permutation + flips, so label maps drawn on the
displayed slices go back to the file's own array order exactly (no resampling) and are written
with the file's affine.

2D+t sequences (an echo cine loop, ...) are (T, H, W): from a NIfTI (x, y, t) or (x, y, 1, t), a
multi-frame DICOM, a multi-page TIFF, or a folder of same-sized images.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError
from .io import (
    IMAGE_SUFFIXES,
    NIFTI_SUFFIXES,
    ImageData,
    _suffix,
    read_image,
    read_pixels,
    write_labels,
)

# Direction each displayed axis (slice, row, column) runs towards, as nibabel axis codes
# (R/L, A/P, S/I). Radiological convention: anterior / head at the top of the screen, the
# patient's right on the left of the screen, anterior on the left in sagittal views.
DISPLAY_CODES: dict[str, tuple[str, str, str]] = {
    "axial": ("S", "P", "L"),  # slices feet -> head
    "coronal": ("A", "I", "L"),  # slices back -> front
    "sagittal": ("L", "I", "P"),  # slices right -> left
}
PLANES = (*DISPLAY_CODES, "array")
_WORDS = {"S": "head", "I": "feet", "A": "front", "P": "back", "L": "left", "R": "right"}


@dataclass(frozen=True)
class Reorientation:
    """Permutation + flips between the stored (Z, Y, X) array and the displayed one.

    axes[d]: the stored axis shown as displayed axis d; flips[d]: it runs the other way.
    """

    axes: tuple[int, int, int] = (0, 1, 2)
    flips: tuple[bool, bool, bool] = (False, False, False)

    @property
    def is_identity(self) -> bool:
        return self.axes == (0, 1, 2) and not any(self.flips)

    def to_display(self, stored: np.ndarray) -> np.ndarray:
        """Stored (Z, Y, X) array -> displayed (slice, row, column) array."""
        out = np.transpose(np.asarray(stored), self.axes)
        flip_axes = tuple(d for d in range(3) if self.flips[d])
        return np.ascontiguousarray(np.flip(out, flip_axes) if flip_axes else out)

    def to_stored(self, shown: np.ndarray) -> np.ndarray:
        """Displayed array -> stored array order (exact inverse of `to_display`)."""
        flip_axes = tuple(d for d in range(3) if self.flips[d])
        out = np.flip(np.asarray(shown), flip_axes) if flip_axes else np.asarray(shown)
        return np.ascontiguousarray(np.transpose(out, np.argsort(self.axes)))

    def index_matrix(self, stored_shape: tuple[int, int, int]) -> np.ndarray:
        """4x4 matrix: displayed (slice, row, col, 1) -> stored (Z, Y, X, 1) voxel index."""
        m = np.zeros((4, 4))
        m[3, 3] = 1.0
        for d, (axis, flip) in enumerate(zip(self.axes, self.flips, strict=True)):
            m[axis, d] = -1.0 if flip else 1.0
            m[axis, 3] = stored_shape[axis] - 1 if flip else 0.0
        return m


def plane_reorientation(affine: np.ndarray, plane: str) -> Reorientation:
    """How to show a stored (Z, Y, X) = file (k, j, i) array in `plane`'s canonical orientation.

    Args:
        affine: the file's 4x4 voxel (i, j, k) -> world (RAS mm) matrix.
        plane: "axial", "coronal", "sagittal", or "array" (as stored, no change).
    """
    if plane == "array":
        return Reorientation()
    if plane not in DISPLAY_CODES:
        raise InputError(f"Unknown plane '{plane}'. Choose one of: {', '.join(PLANES)}.")
    from nibabel.orientations import axcodes2ornt, io_orientation

    affine = np.asarray(affine, dtype=float)
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise InputError("The volume's affine is not a finite 4x4 matrix; cannot find its planes.")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InputError("The volume's affine is degenerate; cannot tell axial from coronal.")
    file_ornt = io_orientation(affine)  # per file axis i, j, k: (world axis, +1/-1)
    target = axcodes2ornt(DISPLAY_CODES[plane])
    axes, flips = [], []
    for world_axis, sign in target:
        file_axis = int(np.nonzero(file_ornt[:, 0] == world_axis)[0][0])
        axes.append(2 - file_axis)  # stored array is the file array transposed (2, 1, 0)
        flips.append(bool(file_ornt[file_axis, 1] != sign))
    return Reorientation(tuple(axes), tuple(flips))


@dataclass
class Volume:
    """A volume or 2D+t sequence as displayed slices, tied to the file it came from.

    data: (slices, rows, columns) in the canonical orientation of `plane`.
    source: the file as read (`read_image` layout and affine); labels are written back in it.
    kind: "volume" or "sequence" (slices are time frames).
    """

    data: np.ndarray
    source: ImageData
    plane: str
    reorientation: Reorientation
    kind: str = "volume"

    @property
    def n_slices(self) -> int:
        return int(self.data.shape[0])

    @property
    def affine(self) -> np.ndarray:
        """4x4 displayed (slice, row, column) index -> world mm, e.g. for a napari layer."""
        to_file = np.eye(4)[[2, 1, 0, 3]]  # stored (Z, Y, X) -> file (i, j, k)
        m = self.reorientation.index_matrix(self.source.data.shape[:3])
        return np.asarray(self.source.affine, float) @ to_file @ m

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size (slice, row, column) in mm (1.0 for unknown geometry)."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))

    def describe(self) -> str:
        """The orientation in words, e.g. for a CLI message."""
        if self.kind == "sequence":
            return f"{self.n_slices} time frames of {self.data.shape[1]} x {self.data.shape[2]}"
        if self.plane == "array":
            return f"{self.n_slices} slices as stored in the file (no reorientation)"
        s, r, c = (_WORDS[code] for code in DISPLAY_CODES[self.plane])
        return (f"{self.n_slices} {self.plane} slices (index grows towards the {s}); "
                f"rows grow towards the {r}, columns towards the patient's {c}")

    def check_slice(self, z: int) -> int:
        """`z` as an int, or a clear error when it is outside the volume."""
        if not 0 <= int(z) < self.n_slices:
            unit = "Frame" if self.kind == "sequence" else "Slice"
            raise InputError(
                f"{unit} {z} is outside the {self.kind} (0 to {self.n_slices - 1})."
            )
        return int(z)

    def to_source(self, labels: np.ndarray) -> np.ndarray:
        """Displayed (slices, rows, columns) labels -> the file's array order, exactly."""
        labels = np.asarray(labels)
        if labels.shape != self.data.shape:
            raise InputError(f"Labels {labels.shape} do not match the volume {self.data.shape}.")
        return self.reorientation.to_stored(labels)

    def from_source(self, labels: np.ndarray) -> np.ndarray:
        """Labels in the file's array order (e.g. read from disk) -> displayed order."""
        labels = np.asarray(labels)
        if labels.shape != self.source.data.shape[:3]:
            raise InputError(
                f"Labels {labels.shape} do not match the file's volume {self.source.data.shape}."
            )
        return self.reorientation.to_display(labels)

    is_volume = True

    def write_labels(self, path: str | Path, labels: np.ndarray) -> Path:
        """Write displayed labels as a label file with the source's shape and affine."""
        return write_labels(path, self.to_source(labels), like=self.source)

    def labels_from_file(self, path: str | Path) -> np.ndarray:
        """A label file of this volume (same grid as its source), in displayed order."""
        return self.from_source(np.asarray(read_image(path).data))


def open_image(path: str | Path, plane: str = "axial") -> Volume | ImageData:
    """What every verb and front end segments: a 2D image as read, or a volume as `plane` slices.

    One frame for all: `segment`, `embed`, `auto`, `propagate`, `eval`, training sets and the
    napari reader slice a volume the same way, so a slice number and pixel coordinates mean the
    same thing everywhere and cached embeddings are found again whichever tool made them.
    """
    if plane not in PLANES:
        raise InputError(f"Unknown plane '{plane}'. Choose one of: {', '.join(PLANES)}.")
    path = Path(path).expanduser()
    _reject_4d(path)
    img = read_image(path)
    if not img.is_volume or img.data.ndim != 3:
        return img
    reo = plane_reorientation(orientation_affine(img.affine), plane)
    return Volume(reo.to_display(img.data), img, plane, reo, "volume")


def read_volume(path: str | Path, plane: str = "axial") -> Volume:
    """Read a 3D volume (NIfTI, DICOM series) and show it as `plane` slices.

    Raises InputError for a 2D image, a 4D file or an unknown plane, in plain words.
    """
    vol = open_image(path, plane)
    name = Path(path).name
    if not isinstance(vol, Volume):
        raise InputError(
            f"{name} is a 2D image {tuple(vol.data.shape[:2])}, not a volume: propagation "
            "needs several slices (a 3D NIfTI/DICOM series) or a 2D+t sequence."
        )
    if vol.n_slices < 2:
        raise InputError(f"{name} has a single slice: open it as a 2D image instead.")
    return vol


def orientation_affine(affine: np.ndarray) -> np.ndarray:
    """The affine that says which way is which. Data without geometry (a TIFF stack, DICOM
    without orientation tags, a NIfTI or Slicer volume whose matrix is exactly the identity, the
    default of tools that save plain arrays) is taken as already stored in the canonical axial
    layout: its slices are used as stored, not turned by an orientation nobody recorded."""
    affine = np.asarray(affine, dtype=float)
    if affine.shape == (4, 4) and np.allclose(affine, np.eye(4)):
        return np.diag([-1.0, -1.0, 1.0, 1.0])
    return affine


def read_sequence(path: str | Path) -> Volume:
    """Read a 2D+t sequence as (T, H, W) frames.

    Accepts a NIfTI (x, y, t) or (x, y, 1, t), a multi-frame DICOM, a multi-page TIFF or a folder
    of same-sized PNG/JPEG/TIFF/BMP frames (sorted by the numbers in their names). Colour frames
    become gray (mean of the channels).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"File or folder not found: {path}")
    if path.is_dir() and _image_files(path):
        return _read_frame_folder(path)
    if _suffix(path) in NIFTI_SUFFIXES:
        img = _read_nifti_sequence(path)
    else:
        img = read_image(path)
    if not img.is_volume or img.data.ndim != 3 or img.data.shape[0] < 2:
        raise InputError(
            f"{path.name} holds a single frame {tuple(img.data.shape[-2:])}: a 2D+t sequence "
            "needs several frames."
        )
    return Volume(img.data, img, "array", Reorientation(), "sequence")


def _reject_4d(path: Path) -> None:
    """A clear error for a NIfTI with several 3D volumes (x, y, z, t)."""
    if _suffix(path) not in NIFTI_SUFFIXES or not path.is_file():
        return
    import nibabel as nib

    try:
        shape = nib.load(str(path)).shape
    except Exception as exc:
        raise InputError(f"Could not read {path.name}: {exc}") from exc
    extra = [n for n in shape[3:] if n > 1]
    if len(shape) > 3 and extra:
        raise InputError(
            f"{path.name} is 4D {tuple(shape)}: {int(np.prod(extra))} volumes of "
            f"{tuple(shape[:3])}. Open one 3D volume (one time point or channel) at a time, "
            "or a 2D+t sequence."
        )


def _read_nifti_sequence(path: Path) -> ImageData:
    import nibabel as nib

    img = nib.load(str(path))
    shape = img.shape
    if not (len(shape) == 3 or (len(shape) == 4 and shape[2] == 1)):
        raise InputError(
            f"{path.name} has shape {tuple(shape)}: a 2D+t NIfTI is (x, y, t) or (x, y, 1, t)."
        )
    scaled = img.dataobj.slope not in (1, None) or img.dataobj.inter not in (0, None)
    arr = np.asanyarray(img.dataobj)
    if arr.dtype.kind == "f" or scaled:
        arr = np.asarray(img.get_fdata(dtype=np.float32))
    arr = arr.reshape(shape[0], shape[1], shape[-1])
    zooms = tuple(float(z) for z in img.header.get_zooms()[:2])
    return ImageData(
        data=np.ascontiguousarray(np.transpose(arr, (2, 1, 0))),
        affine=np.asarray(img.affine, dtype=np.float64),
        is_volume=True,
        path=str(path),
        spacing=(1.0, *zooms[::-1]),
        header=img.header if len(shape) == 3 else None,
    )


def _image_files(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.is_file() and _suffix(p) in IMAGE_SUFFIXES]

    def natural(p: Path):
        return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name.lower())]

    return sorted(files, key=natural)


def _read_frame_folder(folder: Path) -> Volume:
    files = _image_files(folder)
    frames = []
    for file in files:
        try:
            frame = read_pixels(file)
        except Exception as exc:
            raise InputError(f"Could not read the frame {file.name}: {exc}") from exc
        if frame.ndim == 3 and frame.shape[-1] in (3, 4):
            frame = frame[..., :3].mean(axis=-1).astype(np.float32)
        if frame.ndim != 2:
            raise InputError(f"Frame {file.name} is not a 2D image (shape {frame.shape}).")
        if frames and frame.shape != frames[0].shape:
            raise InputError(
                f"Frame {file.name} is {frame.shape}, the first frame is {frames[0].shape}: "
                "every frame of a sequence must have the same size."
            )
        frames.append(frame)
    if len(frames) < 2:
        raise InputError(f"{folder} holds {len(frames)} image(s): a sequence needs several frames.")
    data = np.stack(frames)
    src = ImageData(data=data, is_volume=True, path=str(folder), spacing=(1.0, 1.0, 1.0))
    return Volume(data, src, "array", Reorientation(), "sequence")
