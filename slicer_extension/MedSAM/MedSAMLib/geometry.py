"""Slicer geometry in plain numpy: IJK/RAS matrices, slice axes and 2D prompts.

Slicer's `arrayFromVolume` gives a (K, J, I) array, so array axis `a` is IJK component `2 - a`.
The core segments 2D slices of a (Z, Y, X) stack; a slice taken along array axis `a` keeps the
other two axes in order as (rows, columns), so a prompt's x is the column index and y the row.
Nothing here imports VTK, Qt or Slicer, so it is shared by the Logic, the effect and the tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

AXIS_NAMES = {0: "K (acquisition slices)", 1: "J (rows)", 2: "I (columns)"}
ALIGNED_COSINE = 0.99  # a view is "aligned" with a volume axis within ~8 degrees


class GeometryError(ValueError):
    """A view or a prompt that does not fit the volume's grid."""


@dataclass(frozen=True)
class SlicePrompt:
    """A prompt on one slice: the array axis sliced, the slice index and (x, y) points."""

    axis: int
    index: int
    points: np.ndarray  # (N, 2) x = column, y = row in the slice image


def matrix_from_affine(affine: np.ndarray) -> np.ndarray:
    """IJK-to-RAS of a NIfTI file, for `SetIJKToRASMatrix`.

    nibabel's affine maps the file's voxel (i, j, k) to RAS+ millimetres, which is exactly what
    Slicer's IJKToRAS holds (Slicer reads NIfTI through ITK in LPS and flips x and y back), and
    nibabel's array transposed (2, 1, 0) is Slicer's (K, J, I) `arrayFromVolume`.
    """
    m = np.asarray(affine, dtype=float)
    if m.shape != (4, 4) or not np.allclose(m[3], [0, 0, 0, 1]):
        raise GeometryError(f"An IJK-to-RAS matrix is 4x4 with last row 0 0 0 1, got {m}.")
    if abs(np.linalg.det(m[:3, :3])) < 1e-12:
        raise GeometryError("The volume's axes are degenerate (zero spacing or parallel axes).")
    return m.copy()


def spacing_origin_directions(ijk_to_ras: np.ndarray):
    """Split IJK-to-RAS into spacing (3,), origin (3,) and unit direction columns (3, 3)."""
    m = matrix_from_affine(ijk_to_ras)
    spacing = np.linalg.norm(m[:3, :3], axis=0)
    return spacing, m[:3, 3].copy(), m[:3, :3] / spacing


def ras_to_ijk(ras: np.ndarray, ijk_to_ras: np.ndarray) -> np.ndarray:
    """RAS points (N, 3) -> continuous IJK (N, 3); voxel centres are at integer IJK."""
    ras = np.atleast_2d(np.asarray(ras, dtype=float))
    inv = np.linalg.inv(matrix_from_affine(ijk_to_ras))
    return ras @ inv[:3, :3].T + inv[:3, 3]


def ijk_to_ras(ijk: np.ndarray, ijk_to_ras_matrix: np.ndarray) -> np.ndarray:
    """Continuous IJK points (N, 3) -> RAS (N, 3)."""
    ijk = np.atleast_2d(np.asarray(ijk, dtype=float))
    m = matrix_from_affine(ijk_to_ras_matrix)
    return ijk @ m[:3, :3].T + m[:3, 3]


def axis_for_normal(normal_ras: np.ndarray, ijk_to_ras_matrix: np.ndarray) -> int:
    """The array axis (0 = K, 1 = J, 2 = I) a slice view with this RAS normal cuts across.

    Raises GeometryError for oblique views: the model segments voxel slices, not resampled planes.
    """
    m = matrix_from_affine(ijk_to_ras_matrix)
    normal = np.asarray(normal_ras, dtype=float)
    normal = normal / max(np.linalg.norm(normal), 1e-12)
    axes = m[:3, :3] / np.linalg.norm(m[:3, :3], axis=0)
    cosines = np.abs(axes.T @ normal)  # one per I, J, K
    ijk_axis = int(np.argmax(cosines))
    if cosines[ijk_axis] < ALIGNED_COSINE:
        raise GeometryError(
            "This slice view is oblique to the volume. Use an Axial, Sagittal or Coronal view "
            "that matches the volume (slice view menu > 'Rotate to volume plane') to segment."
        )
    return 2 - ijk_axis


def in_plane_axes(axis: int) -> tuple[int, int]:
    """(row axis, column axis) of the array left when slicing along `axis`."""
    if axis not in (0, 1, 2):
        raise GeometryError(f"Slice axis must be 0, 1 or 2, not {axis}.")
    rows, cols = (a for a in range(3) if a != axis)
    return rows, cols


def ijk_to_slice(ijk: np.ndarray, axis: int, shape_kji: tuple[int, int, int]) -> SlicePrompt:
    """Continuous IJK points on one slice -> slice index and (x, y) in that slice's image.

    All points must lie on the same slice (as they do when they come from one slice view).
    """
    ijk = np.atleast_2d(np.asarray(ijk, dtype=float))
    kji = ijk[:, ::-1]
    along = np.rint(kji[:, axis]).astype(int)
    if along.min() != along.max():
        raise GeometryError("The prompt points lie on different slices; draw them on one slice.")
    index = int(along[0])
    if not 0 <= index < shape_kji[axis]:
        raise GeometryError(
            f"The prompt is outside the volume (slice {index} of 0..{shape_kji[axis] - 1})."
        )
    rows, cols = in_plane_axes(axis)
    points = np.stack([kji[:, cols], kji[:, rows]], axis=1)
    return SlicePrompt(axis=axis, index=index, points=points)


def box_from_points(points: np.ndarray) -> np.ndarray:
    """x0, y0, x1, y1 of two (or more) corner points, any drag direction."""
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    return np.concatenate([pts.min(axis=0), pts.max(axis=0)])


def slice_of(array_kji: np.ndarray, axis: int, index: int) -> np.ndarray:
    """The 2D slice image (rows, columns) along `axis` (a view, not a copy)."""
    return np.take(array_kji, index, axis=axis)


def stack_for_axis(array_kji: np.ndarray, axis: int) -> np.ndarray:
    """The volume as a (slices, rows, columns) stack along `axis`, as the core Session takes it."""
    return np.moveaxis(array_kji, axis, 0)


def stack_to_kji(stack: np.ndarray, axis: int) -> np.ndarray:
    """Inverse of `stack_for_axis`: a (slices, rows, columns) stack back to (K, J, I)."""
    return np.moveaxis(stack, 0, axis)


def slice_extent(axis: int, index: int, shape_kji: tuple[int, int, int]) -> list[int]:
    """VTK extent [i0, i1, j0, j1, k0, k1] of one slice along array `axis`."""
    k, j, i = shape_kji
    extent = [0, i - 1, 0, j - 1, 0, k - 1]
    ijk_axis = 2 - axis
    extent[2 * ijk_axis] = extent[2 * ijk_axis + 1] = int(index)
    return extent


def slice_mask_as_kji(mask2d: np.ndarray, axis: int) -> np.ndarray:
    """A (rows, columns) slice mask as a (K, J, I) block one voxel thick along `axis`."""
    return np.expand_dims(np.asarray(mask2d), axis)


def merge_slice(
    current_kji: np.ndarray, mask2d: np.ndarray, axis: int, index: int, mode: str = "replace"
) -> np.ndarray:
    """What a segment becomes when a slice mask is applied (the Segment Editor's set/add/remove).

    replace: the slice becomes the mask, other slices are kept; add: union on the slice;
    remove: the mask is erased from the slice. Returns a new uint8 (K, J, I) array.
    """
    out = np.array(current_kji, dtype=np.uint8, copy=True)
    target = np.take(out, index, axis=axis)
    mask = np.asarray(mask2d, bool)
    if mask.shape != target.shape:
        raise GeometryError(f"Mask {mask.shape} does not fit slice {index} {target.shape}.")
    if mode == "replace":
        new = mask.astype(np.uint8)
    elif mode == "add":
        new = (target > 0) | mask
    elif mode == "remove":
        new = (target > 0) & ~mask
    else:
        raise GeometryError(f"Unknown mode '{mode}': use replace, add or remove.")
    index_tuple = [slice(None)] * 3
    index_tuple[axis] = index
    out[tuple(index_tuple)] = new
    return out


def edit_steps(mask2d: np.ndarray, mode: str) -> list[tuple[str, np.ndarray]]:
    """The Segment Editor operations that apply a slice mask in `mode`.

    The editor's "set" makes the segment equal to the modifier labelmap everywhere, so a
    one-slice labelmap would erase the other slices; "replace" is therefore done as "remove the
    whole slice" then "add the mask", both limited to the slice, under one undo step.
    """
    mask = np.asarray(mask2d, bool)
    if mode == "replace":
        return [("remove", np.ones_like(mask)), ("add", mask)]
    if mode in ("add", "remove"):
        return [(mode, mask)]
    raise GeometryError(f"Unknown mode '{mode}': use replace, add or remove.")


PLANE_OF_WORLD_AXIS = {0: "sagittal", 1: "coronal", 2: "axial"}  # R/L, A/P, S/I normals


def plane_for_axis(ijk_to_ras_matrix: np.ndarray, axis: int) -> str:
    """The anatomical plane of the slices cut across array `axis` (axial, coronal, sagittal)."""
    from nibabel.orientations import io_orientation

    in_plane_axes(axis)
    ornt = io_orientation(matrix_from_affine(ijk_to_ras_matrix))  # per I, J, K: world axis
    return PLANE_OF_WORLD_AXIS[int(ornt[2 - axis, 0])]


@dataclass(frozen=True)
class SliceFrame:
    """How the slices across one array axis are shown to the core: in the canonical display
    frame of their plane (`napari_medsam.core.volume`), the same pixels the CLI and napari give
    the model, so embeddings are shared and masks agree. The Logic's own API stays in voxel
    terms (array index along the axis, x = column and y = row of the array slice); this frame
    converts between the two.
    """

    axis: int
    shape_kji: tuple[int, int, int]
    reorientation: object  # core.volume.Reorientation, stored (K, J, I) -> displayed

    @classmethod
    def of(cls, ijk_to_ras_matrix: np.ndarray, axis: int, shape_kji) -> SliceFrame:
        from napari_medsam.core.volume import orientation_affine, plane_reorientation

        matrix = orientation_affine(matrix_from_affine(ijk_to_ras_matrix))  # as the CLI's
        plane = plane_for_axis(matrix, axis)
        reo = plane_reorientation(matrix, plane)
        if reo.axes[0] != axis:
            raise GeometryError(f"The {plane} slices of this volume do not run across array "
                                f"axis {axis}.")
        return cls(axis, tuple(int(v) for v in shape_kji), reo)

    @property
    def _transposed(self) -> bool:
        return self.reorientation.axes[1] != in_plane_axes(self.axis)[0]

    def stack(self, array_kji: np.ndarray) -> np.ndarray:
        """(K, J, I) array -> the core's (slices, rows, columns) stack."""
        return self.reorientation.to_display(array_kji)

    def to_kji(self, stack: np.ndarray) -> np.ndarray:
        """The core's stack -> (K, J, I) (exact inverse of `stack`)."""
        return self.reorientation.to_stored(stack)

    def core_index(self, index: int) -> int:
        """Array index along the axis <-> the core's slice index (the map is its own inverse)."""
        n = self.shape_kji[self.axis]
        return n - 1 - int(index) if self.reorientation.flips[0] else int(index)

    def mask_to_array(self, shown: np.ndarray | None) -> np.ndarray | None:
        """A core slice mask -> the same mask on the array slice (rows, columns)."""
        if shown is None:
            return None
        out = np.asarray(shown)
        flips = tuple(d for d in (0, 1) if self.reorientation.flips[d + 1])
        out = np.flip(out, flips) if flips else out
        return np.ascontiguousarray(out.T if self._transposed else out)

    def points_to_core(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) x, y on the array slice -> x, y on the core's slice."""
        pts = np.atleast_2d(np.asarray(points, dtype=float)).copy()
        if self._transposed:
            pts = pts[:, ::-1].copy()
        k, j, i = self.shape_kji
        sizes = {0: k, 1: j, 2: i}
        rows, cols = (sizes[a] for a in self.reorientation.axes[1:])
        if self.reorientation.flips[1]:
            pts[:, 1] = rows - 1 - pts[:, 1]
        if self.reorientation.flips[2]:
            pts[:, 0] = cols - 1 - pts[:, 0]
        return pts

    def box_to_core(self, box) -> np.ndarray:
        """x0, y0, x1, y1 on the array slice -> the same box on the core's slice."""
        b = np.asarray(box, dtype=float).reshape(4)
        return box_from_points(self.points_to_core([[b[0], b[1]], [b[2], b[3]]]))
