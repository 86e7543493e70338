"""core/regions.py gives what scipy.ndimage gave before it (labels, boxes, distances, outlines)."""

import numpy as np
import pytest

from napari_medsam.core import regions

ndimage = pytest.importorskip("scipy.ndimage")  # the reference; in the dev install, not the light


def _masks(seed: int, count: int, ndim: int = 2):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        shape = tuple(int(s) for s in rng.integers(1, 24 if ndim == 3 else 48, size=ndim))
        yield rng.random(shape) < rng.random()


@pytest.mark.parametrize("diagonal", [False, True])
def test_labels_and_boxes_equal_scipy(diagonal):
    for ndim in (2, 3):
        for mask in _masks(1 + ndim, 150, ndim):
            structure = np.ones((3,) * ndim, bool) if diagonal else None
            want, n_want = ndimage.label(mask, structure=structure)
            got, n_got = regions.label(mask, diagonal=diagonal)
            assert n_got == n_want
            np.testing.assert_array_equal(got, want)
            assert regions.bounding_boxes(got) == ndimage.find_objects(want)


def test_depth_equals_scipy_with_and_without_spacing():
    rng = np.random.default_rng(7)
    for ndim in (2, 3):
        for mask in _masks(10 + ndim, 100, ndim):
            if mask.all():
                assert np.isinf(regions.depth(mask)).all()  # no outside pixel: said, not invented
                continue
            np.testing.assert_allclose(regions.depth(mask), ndimage.distance_transform_edt(mask),
                                       atol=1e-4)
            spacing = tuple(rng.uniform(0.2, 3.0, size=ndim))
            np.testing.assert_allclose(regions.depth(mask, spacing),
                                       ndimage.distance_transform_edt(mask, sampling=spacing),
                                       rtol=1e-5, atol=1e-4)


def test_depth_reads_axes_in_array_order_not_memory_order():
    mask = np.zeros((9, 31), bool)
    mask[1:-1, 1:-1] = True
    spacing = (1.0, 3.0)
    want = ndimage.distance_transform_edt(mask, sampling=spacing)
    np.testing.assert_allclose(regions.depth(np.asfortranarray(mask), spacing), want, atol=1e-4)
    np.testing.assert_allclose(regions.depth(mask.T, spacing[::-1]), want.T, atol=1e-4)


def test_border_equals_scipy_erosion_outline():
    for ndim in (2, 3):
        for mask in _masks(20 + ndim, 100, ndim):
            np.testing.assert_array_equal(regions.border(mask),
                                          mask & ~ndimage.binary_erosion(mask))


def test_labels_of_bool_masks_are_right_where_cc3d_alone_is_not():
    # cc3d 4.1 labels a background pixel of this bool mask (8-connected); regions passes uint8.
    mask = np.array([[0, 1, 0, 0, 0], [0, 0, 1, 0, 1], [0, 0, 0, 1, 1]], bool)
    labels, n = regions.label(mask, diagonal=True)
    assert n == 1 and not labels[~mask].any() and (labels[mask] == 1).all()


def test_wrong_dimensions_are_refused():
    with pytest.raises(ValueError, match="2D or 3D"):
        regions.label(np.ones(5, bool))
