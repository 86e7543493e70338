"""The ONNX models shipped for the light install are what the package's weights export to today:
the same LiteMedSAM weights, the same click adapter, the same heads, and outputs equal to a fresh
export (scripts/export_onnx.py --check; an int8 file: equal to its fp32 file quantized again). A
changed adapter or head without a re-export fails here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_shipped_onnx_models_match_a_fresh_export():
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "export_onnx.py"), "--check"],
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "match a fresh export" in done.stdout
