"""Render the Slicer module's panel (MedSAM.ui) to a PNG without Slicer, for the docs.

Only plain Qt can be loaded here, so Slicer's widgets are stood in for: ctkCollapsibleButton ->
QGroupBox (its title; a collapsed section is drawn collapsed, as its title only),
ctkPathLineEdit -> QLineEdit, qMRMLNodeComboBox and qMRMLSegmentSelectorWidget -> QComboBox,
qMRMLWidget -> QWidget. Combo boxes get the items the module fills in at run time, and the
sample text below. Slicer's style, icons and the MRML selectors' real look are not shown.

    QT_QPA_PLATFORM=offscreen python scripts/render_slicer_ui.py docs/slicer_panel.png
"""

from __future__ import annotations

import argparse
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

UI = Path(__file__).resolve().parents[1] / "slicer_extension/MedSAM/Resources/UI/MedSAM.ui"
STAND_INS = {"ctkCollapsibleButton": "QGroupBox", "ctkPathLineEdit": "QLineEdit",
             "qMRMLNodeComboBox": "QComboBox", "qMRMLSegmentSelectorWidget": "QComboBox",
             "qMRMLWidget": "QWidget"}
DROP = {"nodeTypes", "addEnabled", "removeEnabled", "noneEnabled", "editEnabled", "filters"}
SAMPLE = {  # what the panel shows in use: the module's run-time items and an example project
    "volumeSelector": ["patient0027_4CH_ED"],
    "segmentSelector": ["Segmentation: echo  |  Segment: myocardium"],
    "presetComboBox": ["auto"], "profileComboBox": ["default (PyTorch)"],
    "propagationModeComboBox": ["volume"],
    "modalityComboBox": ["ultrasound"],
}


def plain_ui(expand: set[str]) -> str:
    """MedSAM.ui with Slicer's widgets replaced by plain Qt ones; sections in `expand` open."""
    root = ET.parse(UI).getroot()
    for widget in root.iter("widget"):
        cls = widget.get("class")
        if cls == "ctkCollapsibleButton":
            for prop in widget.findall("property"):
                if prop.get("name") == "text":
                    prop.set("name", "title")
                elif prop.get("name") == "collapsed":
                    widget.remove(prop)
            if widget.get("name") not in expand:  # collapsed: its title only
                for layout in widget.findall("layout"):
                    widget.remove(layout)
        for prop in list(widget.findall("property")):
            if prop.get("name") in DROP:
                widget.remove(prop)
        widget.set("class", STAND_INS.get(cls, cls))
    for tag in ("customwidgets", "connections"):
        for node in root.findall(tag):
            root.remove(node)
    return ET.tostring(root, encoding="unicode")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--expand", default="inputsCollapsibleButton,finetuneCollapsibleButton",
                        help="sections drawn open (names in MedSAM.ui)")
    parser.add_argument("--width", type=int, default=400)
    args = parser.parse_args()

    from PyQt6 import uic
    from PyQt6.QtWidgets import QApplication, QComboBox, QLineEdit

    app = QApplication([])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "MedSAM.ui"
        path.write_text(plain_ui(set(args.expand.split(","))))
        panel = uic.loadUi(str(path))
    for name, items in SAMPLE.items():
        combo = panel.findChild(QComboBox, name)
        if combo is not None:
            combo.addItems(items)
    folder = panel.findChild(QLineEdit, "correctionsPathLineEdit")
    if folder is not None:
        folder.setText("~/.local/share/napari-medsam/project")
    panel.resize(args.width, panel.sizeHint().height())
    panel.adjustSize()
    panel.resize(args.width, panel.height())
    panel.grab().save(str(args.out))
    app.quit()
    print(f"wrote {args.out} ({panel.width()} x {panel.height()})")


if __name__ == "__main__":
    main()
