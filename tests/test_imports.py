"""The core must stay importable without any GUI toolkit (Slicer embeds it headless)."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import sys, pkgutil, importlib
import napari_medsam.core as core
for m in pkgutil.walk_packages(core.__path__, "napari_medsam.core."):
    importlib.import_module(m.name)
import napari_medsam.cli, napari_medsam.sample
bad = sorted(m for m in sys.modules
             if m.split(".")[0] in {"qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "napari",
                                    "slicer", "vtk", "vtkmodules", "magicgui", "ctk", "qt"})
print(",".join(bad))
"""


def test_core_imports_no_gui_modules():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"core imported GUI modules: {out.stdout}"
