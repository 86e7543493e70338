"""The Qt side of the extension cannot run without the Slicer application; check what can be
checked without it: the .ui names the widget uses, the CMake file lists, the classes Slicer looks
for, the icon, the effect's gestures and the first-use install plan."""

from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from MedSAMLib import dependencies, interaction

MODULE_DIR = Path(__file__).resolve().parents[2] / "slicer_extension" / "MedSAM"

QT_CLASSES = {"QWidget", "QLabel", "QComboBox", "QPushButton", "QProgressBar", "QLineEdit",
              "QSpinBox", "QCheckBox"}


def ui_widgets() -> dict[str, str]:
    root = ET.parse(MODULE_DIR / "Resources" / "UI" / "MedSAM.ui").getroot()
    return {w.get("name"): w.get("class") for w in root.iter("widget")}


def test_every_ui_name_the_widget_uses_exists():
    source = "\n".join((MODULE_DIR / f).read_text()
                       for f in ("MedSAM.py", "MedSAMLib/finetune_section.py"))
    used = set(re.findall(r"self\.ui\.(\w+)", source))
    # names looked up with getattr(self.ui, name)
    used |= set(re.findall(r'"(\w+(?:Button|ComboBox|Selector|LineEdit|Bar))"', source))
    widgets = ui_widgets()
    assert used, "the widget uses the .ui file"
    assert used <= set(widgets), f"missing in MedSAM.ui: {sorted(used - set(widgets))}"


def test_ui_declares_its_custom_widgets():
    root = ET.parse(MODULE_DIR / "Resources" / "UI" / "MedSAM.ui").getroot()
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    custom = set(ui_widgets().values()) - QT_CLASSES
    assert custom <= declared, f"undeclared custom widgets: {sorted(custom - declared)}"


def classes_of(path):
    tree = ast.parse(path.read_text())
    return {n.name: [ast.unparse(b) for b in n.bases] for n in tree.body
            if isinstance(n, ast.ClassDef)}


def test_module_and_effect_have_the_classes_slicer_looks_for():
    module = classes_of(MODULE_DIR / "MedSAM.py")
    assert module["MedSAM"] == ["ScriptedLoadableModule"]
    assert "ScriptedLoadableModuleWidget" in module["MedSAMWidget"]
    assert "ScriptedLoadableModuleLogic" in module["MedSAMLogic"]
    assert module["MedSAMTest"] == ["ScriptedLoadableModuleTest"]
    effect = classes_of(MODULE_DIR / "MedSAMLib" / "SegmentEditorEffect.py")
    assert effect["SegmentEditorEffect"] == ["AbstractScriptedSegmentEditorEffect"]
    source = (MODULE_DIR / "MedSAMLib" / "SegmentEditorEffect.py").read_text()
    assert source.index("saveStateForUndo") < source.rindex("apply_slice_mask")
    assert "modifySelectedSegmentByLabelmap" in source


def test_cmake_ships_every_script_and_resource():
    listed = (MODULE_DIR / "CMakeLists.txt").read_text().replace("${MODULE_NAME}", "MedSAM")
    files = [p.relative_to(MODULE_DIR).as_posix() for p in MODULE_DIR.rglob("*")
             if p.is_file() and p.suffix in (".py", ".ui", ".png") and "__pycache__" not in p.parts]
    missing = [f for f in files if f not in listed]
    assert not missing, f"not in MedSAM/CMakeLists.txt: {missing}"
    top = (MODULE_DIR.parent / "CMakeLists.txt").read_text()
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_DESCRIPTION",
                "EXTENSION_DEPENDS", "add_subdirectory(MedSAM)"):
        assert key in top


def test_icon_is_a_real_png():
    from PIL import Image

    icon = Image.open(MODULE_DIR / "Resources" / "Icons" / "MedSAM.png")
    assert icon.format == "PNG" and icon.size == (128, 128)
    assert len(np.unique(np.asarray(icon.convert("RGB")).reshape(-1, 3), axis=0)) > 10


def test_gestures_click_versus_drag():
    tracker = interaction.GestureTracker(drag_pixels=5)
    tracker.press((100, 100))
    assert tracker.move((102, 103)) is None  # still a click
    click = tracker.release((102, 103))
    assert click.kind == "point" and click.positive and click.end == (100.0, 100.0)
    tracker.press((100, 100), negative=True)
    assert tracker.release((101, 100)).positive is False
    tracker.press((10, 20))
    assert tracker.move((60, 90)) == (10.0, 20.0, 60.0, 90.0)
    box = tracker.release((60, 90))
    assert box.kind == "box" and (box.start, box.end) == ((10.0, 20.0), (60.0, 90.0))
    assert tracker.release((0, 0)) is None and not tracker.active


def test_object_refinement_keeps_earlier_content():
    base = np.zeros((4, 4), bool)
    base[0, 0] = True
    obj = interaction.ObjectOnSlice(key=("v", "s", "id", 0, 3), base=base)
    first = np.zeros((4, 4), bool)
    first[2:, 2:] = True
    smaller = np.zeros((4, 4), bool)
    smaller[3, 3] = True
    assert obj.slice_content(first).sum() == 5
    np.testing.assert_array_equal(obj.slice_content(smaller), base | smaller)


@pytest.mark.parametrize(
    ("core", "torch", "extension", "want", "requirements", "from_extension", "backend"),
    [
        (True, True, False, False, [], False, "torch"),
        (False, True, False, False, ["napari-medsam[torch]"], False, "torch"),
        (False, False, True, False, ["napari-medsam"], False, "onnxruntime"),  # light first
        (False, False, True, True, ["napari-medsam[torch]"], True, "torch"),
        (False, False, False, True, ["napari-medsam[torch]"], False, "torch"),
        (False, False, False, False, ["napari-medsam"], False, "onnxruntime"),
    ],
)
def test_install_plan(core, torch, extension, want, requirements, from_extension, backend):
    plan = dependencies.plan_install("napari-medsam", core, torch, extension, want)
    assert plan.requirements == requirements
    assert plan.torch_from_extension == from_extension and plan.backend == backend
    assert plan.needed == (not core)
    assert plan.message.endswith((".", "?"))
