"""Run the MedSAM Logic on Slicer's MRML libraries without the Slicer application.

PyPI's `slicer-core` wheel has the MRML scene, volume and segmentation nodes, their storage nodes
and `slicer.util`'s array helpers, but no `slicer.app`: nothing registers the segmentation
converter rules or creates the module logics that `slicer.util` looks up as `slicer.mrmlScene` and
`slicer.modules.<name>.logic()`. `setup_scene()` does what the application does at start-up, with
the real logic classes, so the same Logic code runs in batch scripts, in CI and inside Slicer.
Inside the Slicer application it changes nothing and returns the application's scene.
"""

from __future__ import annotations

import types
from dataclasses import dataclass


@dataclass
class SlicerContext:
    """The scene and the module logics the Logic uses (real application or headless)."""

    scene: object
    app_logic: object
    volumes: object
    segmentations: object
    colors: object = None
    headless: bool = True


_CONTEXT: SlicerContext | None = None


def in_slicer_app() -> bool:
    """True inside the Slicer application (it has `slicer.app`)."""
    import slicer

    return getattr(slicer, "app", None) is not None


def _register_converter_rules(slicer) -> None:
    """Labelmap <-> closed surface rules, once per process (the application does it at start)."""
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    have = {rule.GetName() for rule in factory.GetConverterRules()}
    for cls in (
        slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule,
        slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule,
    ):
        rule = cls()
        if rule.GetName() not in have:
            factory.RegisterConverterRule(rule)


def setup_scene(scene=None) -> SlicerContext:
    """The scene with its module logics; builds them once when there is no Slicer application.

    Args:
        scene: a `vtkMRMLScene` to use headless (a new one when None). Ignored inside Slicer.

    Returns:
        The context; `slicer.mrmlScene` and `slicer.modules.volumes/segmentations.logic()` then
        work as in the application, so `slicer.util` helpers such as
        `updateSegmentBinaryLabelmapFromArray` can be used unchanged.
    """
    global _CONTEXT
    import slicer

    if in_slicer_app():
        return SlicerContext(
            scene=slicer.mrmlScene,
            app_logic=slicer.app.applicationLogic(),
            volumes=slicer.modules.volumes.logic(),
            segmentations=slicer.modules.segmentations.logic(),
            colors=slicer.modules.colors.logic(),
            headless=False,
        )
    if _CONTEXT is not None and (scene is None or scene is _CONTEXT.scene):
        return _CONTEXT
    _register_converter_rules(slicer)
    scene = scene if scene is not None else slicer.vtkMRMLScene()
    app = slicer.vtkSlicerApplicationLogic()
    app.SetMRMLScene(scene)
    logics = {}
    for name, cls in (
        ("Colors", slicer.vtkSlicerColorLogic),
        ("Volumes", slicer.vtkSlicerVolumesLogic),
        ("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic),
    ):
        logic = cls()
        logic.SetMRMLApplicationLogic(app)
        logic.SetMRMLScene(scene)
        app.SetModuleLogic(name, logic)
        logics[name] = logic
    slicer.mrmlScene = scene
    modules = getattr(slicer, "modules", None) or types.SimpleNamespace()
    for name, logic in logics.items():
        setattr(modules, name.lower(), types.SimpleNamespace(logic=lambda logic=logic: logic))
    slicer.modules = modules
    _CONTEXT = SlicerContext(
        scene=scene,
        app_logic=app,
        volumes=logics["Volumes"],
        segmentations=logics["Segmentations"],
        colors=logics["Colors"],
    )
    return _CONTEXT


def app_logic():
    """The application logic: Slicer's, or the headless context's (None before setup)."""
    import slicer

    if in_slicer_app():
        return slicer.app.applicationLogic()
    return _CONTEXT.app_logic if _CONTEXT is not None else None
