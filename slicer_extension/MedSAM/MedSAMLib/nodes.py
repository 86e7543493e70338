"""MRML nodes <-> numpy: volumes, segments, slice labelmaps and sequences.

Only `slicer` (MRML) and `vtk` are used here, never Qt, so the module runs in the application and
headless on PyPI's `slicer-core` (after `headless.setup_scene()`).
"""

from __future__ import annotations

import numpy as np

from .geometry import matrix_from_affine, slice_extent, slice_mask_as_kji


class NodeError(ValueError):
    """A node that cannot be used (no image, 4D data, a non-linear transform...)."""


def to_gray(array: np.ndarray) -> np.ndarray:
    """(K, J, I) scalars as they are; (K, J, I, C) colour volumes as their channel mean."""
    if array.ndim == 4:
        if array.shape[-1] == 1:
            return array[..., 0]
        return array[..., :3].astype(np.float32).mean(axis=-1)
    if array.ndim != 3:
        raise NodeError(f"Expected a 3D volume, got an array of shape {array.shape}.")
    return array


def volume_array(volume_node) -> np.ndarray:
    """A copy of the volume's voxels as (K, J, I) (colour volumes averaged to gray)."""
    import slicer

    if volume_node is None or volume_node.GetImageData() is None:
        raise NodeError("The volume has no image data: load or select another volume.")
    return np.array(to_gray(slicer.util.arrayFromVolume(volume_node)), copy=True)


def ijk_to_ras_matrix(volume_node) -> np.ndarray:
    """The volume's IJK-to-RAS as a 4x4 numpy array (its own, without parent transforms)."""
    import vtk

    m = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def to_world_matrix(node) -> np.ndarray:
    """The node's linear parent transform to world as 4x4 (identity when it has none)."""
    import vtk

    parent = node.GetParentTransformNode() if node is not None else None
    if parent is None:
        return np.eye(4)
    if not parent.IsTransformToWorldLinear():
        raise NodeError(
            f"'{node.GetName()}' is under a non-linear (warping) transform. Harden the transform "
            "(Data module > right-click > Harden transform) before segmenting."
        )
    m = vtk.vtkMatrix4x4()
    parent.GetMatrixTransformToWorld(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def ijk_to_world_matrix(volume_node) -> np.ndarray:
    """IJK-to-world RAS including a linear parent transform (slice views show world RAS)."""
    return to_world_matrix(volume_node) @ ijk_to_ras_matrix(volume_node)


def set_geometry(volume_node, ijk_to_ras: np.ndarray) -> None:
    """Set a volume's spacing, origin and directions from a 4x4 IJK-to-RAS matrix."""
    import slicer

    volume_node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(matrix_from_affine(ijk_to_ras)))


def add_volume(scene, array_kji: np.ndarray, ijk_to_ras: np.ndarray, name: str,
               class_name: str = "vtkMRMLScalarVolumeNode"):
    """A new volume node holding `array_kji` with the given geometry, with display nodes."""
    import slicer

    node = scene.AddNewNodeByClass(class_name, name)
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(array_kji))
    set_geometry(node, ijk_to_ras)
    node.CreateDefaultDisplayNodes()
    return node


def add_segmentation(scene, volume_node, name: str = "MedSAM"):
    """A new segmentation whose geometry is the volume's grid."""
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    node.CreateDefaultDisplayNodes()
    node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    return node


def segment_id(segmentation_node, name: str, color=None) -> str:
    """The id of the segment called `name`, made (empty) when missing."""
    segmentation = segmentation_node.GetSegmentation()
    found = segmentation.GetSegmentIdBySegmentName(name)
    if found:
        return found
    if color is None:
        return segmentation.AddEmptySegment("", name)
    return segmentation.AddEmptySegment("", name, list(color))


def segment_array(segmentation_node, segment_id_: str, volume_node) -> np.ndarray:
    """The segment as a uint8 (K, J, I) array on the volume's grid."""
    import slicer

    return np.asarray(
        slicer.util.arrayFromSegmentBinaryLabelmap(segmentation_node, segment_id_, volume_node),
        dtype=np.uint8,
    )


def write_segment(segmentation_node, segment_id_: str, volume_node, mask_kji: np.ndarray) -> None:
    """Replace the whole segment by a (K, J, I) mask on the volume's grid."""
    import slicer

    mask = np.asarray(mask_kji)
    expected = tuple(volume_node.GetImageData().GetDimensions())[::-1]
    if mask.shape != expected:
        raise NodeError(f"The mask {mask.shape} does not match the volume {expected}.")
    slicer.util.updateSegmentBinaryLabelmapFromArray(
        (mask > 0).astype(np.uint8), segmentation_node, segment_id_, volume_node
    )


def slice_labelmap(volume_node, mask2d: np.ndarray, axis: int, index: int,
                   segmentation_node=None):
    """A vtkOrientedImageData one slice thick, in the volume's geometry, holding `mask2d`.

    This is the modifier labelmap the Segment Editor effect hands to
    `modifySelectedSegmentByLabelmap` with the slice's extent, so only that slice changes.
    Its matrix is expressed in the segmentation's own frame (the editor's modifier labelmaps
    are), which differs from world RAS only when the segmentation has a parent transform.
    """
    import slicer
    import vtk
    from vtk.util import numpy_support

    shape = tuple(volume_node.GetImageData().GetDimensions())[::-1]
    extent = slice_extent(axis, index, shape)
    block = np.ascontiguousarray(slice_mask_as_kji(mask2d, axis), dtype=np.uint8)
    dims = (extent[1] - extent[0] + 1, extent[3] - extent[2] + 1, extent[5] - extent[4] + 1)
    if block.shape != dims[::-1]:
        raise NodeError(f"The mask {np.asarray(mask2d).shape} does not fit slice {index}.")
    labelmap = slicer.vtkOrientedImageData()
    labelmap.SetExtent(extent)
    labelmap.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    to_segmentation = np.linalg.inv(to_world_matrix(segmentation_node))
    labelmap.SetImageToWorldMatrix(
        slicer.util.vtkMatrixFromArray(to_segmentation @ ijk_to_world_matrix(volume_node))
    )
    scalars = numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars())
    scalars[:] = block.ravel()
    labelmap.Modified()
    return labelmap, extent


def apply_slice_labelmap(segmentation_node, segment_id_: str, labelmap, extent,
                         operation: str) -> None:
    """Add or remove a slice labelmap in a segment without the Segment Editor (no undo, no
    masking): the fallback of `editing.SliceEditor` for Slicer versions without
    vtkSlicerSegmentEditorLogic."""
    import slicer
    from vtk.util import numpy_support

    logic = slicer.vtkSlicerSegmentationsModuleLogic
    if operation == "add":
        merge = logic.MODE_MERGE_MAX
    elif operation == "remove":  # MERGE_MIN keeps voxels set in both: invert the modifier
        merge = logic.MODE_MERGE_MIN
        scalars = numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars())
        scalars[:] = 1 - (scalars > 0)
        labelmap.Modified()
    else:
        raise NodeError(f"Unknown operation '{operation}': use add or remove.")
    if not logic.SetBinaryLabelmapToSegment(labelmap, segmentation_node, segment_id_, merge,
                                            list(extent)):
        raise NodeError("Slicer could not write the mask into the segment.")


def labelmap_geometry(segmentation_node, segment_id_: str) -> tuple[np.ndarray, list[int]]:
    """(IJK-to-RAS 4x4, extent) of the segment's internal binary labelmap."""
    import slicer
    import vtk

    labelmap = slicer.vtkOrientedImageData()
    segmentation_node.GetBinaryLabelmapRepresentation(segment_id_, labelmap)
    m = vtk.vtkMatrix4x4()
    labelmap.GetImageToWorldMatrix(m)
    matrix = np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])
    return matrix, list(labelmap.GetExtent())


# ---- sequences (echo cine loops) --------------------------------------------------------------
def sequence_frames(sequence_node) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The frames of a volume sequence as (T, H, W), the first frame's IJK-to-RAS, index values.

    Each frame must be a single-slice volume (a 2D image, gray or colour) of one size.
    """
    n = sequence_node.GetNumberOfDataNodes()
    if n == 0:
        raise NodeError("The sequence is empty.")
    frames, values, first = [], [], None
    for t in range(n):
        node = sequence_node.GetNthDataNode(t)
        if node is None or not node.IsA("vtkMRMLVolumeNode"):
            raise NodeError("The sequence does not hold image frames (volume nodes).")
        array = volume_array(node)
        if array.shape[0] != 1:
            raise NodeError(
                f"Frame {t} is a 3D volume ({array.shape[0]} slices). Echo 2D+t needs one "
                "slice per frame; for 3D+t pick one time point and segment it as a volume."
            )
        if first is not None and array.shape[1:] != frames[0].shape:
            raise NodeError(f"Frame {t} is {array.shape[1:]}, frame 0 is {frames[0].shape}.")
        first = node if first is None else first
        frames.append(array[0])
        values.append(sequence_node.GetNthIndexValue(t))
    return np.stack(frames), ijk_to_ras_matrix(first), values


def stacked_geometry(frame_ijk_to_ras: np.ndarray, step: float = 1.0) -> np.ndarray:
    """IJK-to-RAS of frames stacked along K: in-plane axes of the frame, K along its normal."""
    m = matrix_from_affine(frame_ijk_to_ras).copy()
    normal = np.cross(m[:3, 0], m[:3, 1])
    m[:3, 2] = normal / max(np.linalg.norm(normal), 1e-12) * step
    return m


def add_segmentation_sequence(scene, frames_mask: np.ndarray, sequence_node, name: str,
                              segment_name: str = "MedSAM"):
    """A sequence of segmentations, one per frame of `sequence_node`, from (T, H, W) masks.

    Each frame's segmentation is on that frame's own grid, so it plays back with the images in
    a sequence browser.
    """
    out = scene.AddNewNodeByClass("vtkMRMLSequenceNode", name)
    out.SetIndexName(sequence_node.GetIndexName())
    out.SetIndexUnit(sequence_node.GetIndexUnit())
    out.SetIndexType(sequence_node.GetIndexType())
    for t in range(sequence_node.GetNumberOfDataNodes()):
        frame = sequence_node.GetNthDataNode(t)
        seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{name}_{t}")
        seg.SetReferenceImageGeometryParameterFromVolumeNode(frame)
        sid = seg.GetSegmentation().AddEmptySegment("", segment_name)
        write_segment(seg, sid, frame, frames_mask[t][None])
        out.SetDataNodeAtValue(seg, sequence_node.GetNthIndexValue(t))
        scene.RemoveNode(seg)  # the sequence keeps its own copy
    return out
