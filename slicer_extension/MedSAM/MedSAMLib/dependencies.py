"""Install napari-medsam into Slicer's Python on first use, with plain-words messages.

Slicer's own rules: `slicer.util.pip_install` on the main thread, after the user agreed. PyTorch
comes from Slicer's PyTorch extension (PyTorchUtils) when it is installed, since it picks the
build matching the GPU driver; otherwise napari-medsam is installed with its ONNX Runtime extra
and the module runs the fast CPU (ONNX Runtime) path when the installed core offers it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field

DEFAULT_SPEC = "napari-medsam"  # a wheel path or "napari-medsam==X" also work (Advanced)


@dataclass
class InstallPlan:
    """What first use installs, and the words shown before and while it happens."""

    requirements: list[str] = field(default_factory=list)
    torch_from_extension: bool = False
    backend: str = "torch"  # "torch" or "onnxruntime"
    message: str = ""

    @property
    def needed(self) -> bool:
        return bool(self.requirements) or self.torch_from_extension


def installed(module: str) -> bool:
    """True when `module` can be imported (checked without importing it)."""
    return importlib.util.find_spec(module) is not None


def plan_install(spec: str = DEFAULT_SPEC, have_core: bool | None = None,
                 have_torch: bool | None = None,
                 have_pytorch_extension: bool | None = None) -> InstallPlan:
    """Decide what to install (arguments override the checks, for tests)."""
    have_core = installed("napari_medsam") if have_core is None else have_core
    have_torch = installed("torch") if have_torch is None else have_torch
    if have_pytorch_extension is None:
        have_pytorch_extension = installed("PyTorchUtils")
    if have_core:
        return InstallPlan(message="napari-medsam is installed.")
    if have_torch or have_pytorch_extension:
        plan = InstallPlan([spec], torch_from_extension=not have_torch, backend="torch")
        torch_words = ("PyTorch is already installed." if have_torch else
                       "PyTorch will be installed first by the PyTorch extension, matching your "
                       "graphics card driver.")
        plan.message = (
            "MedSAM needs the napari-medsam package (the LiteMedSAM model and its libraries, "
            f"about 100 MB). {torch_words} Install now? It takes a few minutes and Slicer does "
            "not respond until it is done. Your scene is not touched."
        )
        return plan
    plan = InstallPlan([f"{spec}[onnx]"], backend="onnxruntime")
    plan.message = (
        "MedSAM needs the napari-medsam package with ONNX Runtime for fast CPU segmentation "
        "(about 1-3 GB with its PyTorch dependency). For a GPU build of PyTorch, cancel and "
        "install the 'PyTorch' extension first (Extensions Manager), then restart Slicer. "
        "Install now? It takes several minutes and Slicer does not respond until it is done."
    )
    return plan


def ensure_installed(confirm: Callable[[str], bool] | None = None,
                     status: Callable[[str], None] | None = None,
                     spec: str = DEFAULT_SPEC) -> bool:
    """Install what is missing (inside Slicer). Returns True when napari-medsam can be used.

    Args:
        confirm: asks the user (e.g. slicer.util.confirmOkCancelDisplay); None installs directly.
        status: shows progress text (a label, the status bar).
        spec: pip requirement for napari-medsam (a version pin or a wheel path).
    """
    say = status or (lambda text: None)
    plan = plan_install(spec)
    if not plan.needed:
        return True
    if confirm is not None and not confirm(plan.message):
        say("Installation cancelled: MedSAM cannot segment without napari-medsam.")
        return False
    import slicer

    if plan.torch_from_extension:
        say("Installing PyTorch through the PyTorch extension...")
        slicer.app.processEvents()
        import PyTorchUtils

        if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False) is None:
            say("PyTorch was not installed; MedSAM cannot run without it.")
            return False
    for requirement in plan.requirements:
        say(f"Installing {requirement} (this takes a few minutes)...")
        slicer.app.processEvents()
        _pip(slicer, requirement)
    importlib.invalidate_caches()
    if not installed("napari_medsam"):
        say("napari-medsam could not be installed: see the Python console for pip's message.")
        return False
    say(f"napari-medsam installed ({plan.backend}). Ready.")
    return True


def _pip(slicer, requirement: str) -> None:
    """Slicer >= 5.10's pip_ensure (progress dialog, restart prompt), else util.pip_install."""
    import os

    packaging = getattr(slicer, "packaging", None)
    local = os.path.exists(requirement.split("[")[0])
    if packaging is not None and hasattr(packaging, "pip_ensure") and not local:
        packaging.pip_ensure(requirement, prompt_install=False, requester="MedSAM")
    else:
        slicer.util.pip_install(requirement)


def upgrade(spec: str = DEFAULT_SPEC) -> None:
    """Update napari-medsam in place (a restart of Slicer loads the new version)."""
    import slicer

    slicer.util.pip_install(f"--upgrade {spec}")
