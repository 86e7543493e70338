"""The ONNX backend's model-free parts: prompt packing, decode regions, session settings."""

from __future__ import annotations

import numpy as np
import pytest


def test_region_cells_widen_to_a_minimum_and_stay_inside():
    from napari_medsam.core.backends.onnx_backend import region_cells

    rows, cols = region_cells(None, np.array([[0.0, 0.0, 8.0, 8.0]]), 0.25, 4.0, 64, min_cells=32)
    assert (rows[0], rows[-1], len(rows)) == (0, 31, 32) and len(cols) == 32
    rows, _ = region_cells(None, np.array([[120.0, 120.0, 130.0, 130.0]]), 0.0, 4.0, 64, 32)
    assert len(rows) == 32 and rows[0] <= 120 // 4 and rows[-1] >= 130 // 4


def test_pack_prompts_like_segment_anything():
    from napari_medsam.core.backends.onnx_backend import pack_prompts

    coords, labels = pack_prompts(np.array([[[5.0, 6.0]]]), np.array([[1]]), None, 1)
    assert coords.shape == (1, 2, 2) and labels.tolist() == [[1.0, -1.0]]  # padding point
    coords, labels = pack_prompts(None, None, np.array([[1.0, 2.0, 30.0, 40.0]] * 2), 2)
    assert labels.tolist() == [[2.0, 3.0]] * 2 and coords[1, 1].tolist() == [30.0, 40.0]


def test_exact_int8_kernels_only_on_cpus_without_vnni():
    """Without VNNI, onnxruntime's fast int8 products saturate (box masks agreed 0.96 with torch
    on such a CPU): its exact kernels are asked for there, and only there."""
    from napari_medsam.core.backends.onnx_backend import (
        int8_needs_exact_kernels,
        lacks_vnni,
        session_options,
    )

    zen3 = "processor\t: 0\nflags\t\t: fpu sse4_2 avx avx2 fma\n"
    assert lacks_vnni(zen3) and lacks_vnni("no flags line here")
    assert not lacks_vnni(zen3.replace("avx2", "avx2 avx512f avx512_vnni"))
    assert not lacks_vnni(zen3.replace("avx2", "avx2 avx_vnni"))  # Alder Lake and later
    opts = session_options(1)
    if int8_needs_exact_kernels():  # this CPU: the exact kernels
        assert opts.get_session_config_entry("session.x64quantprecision") == "1"
    else:
        with pytest.raises(RuntimeError):  # onnxruntime's default (not set)
            opts.get_session_config_entry("session.x64quantprecision")
