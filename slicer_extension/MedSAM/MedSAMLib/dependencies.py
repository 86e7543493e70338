"""Install napari-medsam into Slicer's Python on first use, with plain-words messages.

Slicer's own rules: `slicer.util.pip_install` on the main thread, after the user agreed. By
default the light form is installed (`napari-medsam`, about 300 MB: the built-in model as
shipped ONNX files, run by ONNX Runtime on the CPU; no PyTorch). PyTorch (`napari-medsam[torch]`:
the GPU path, fine-tuning, other checkpoints) is installed when the user asks for it (Advanced >
"Install PyTorch") or is already there; it then comes from Slicer's PyTorch extension
(PyTorchUtils) when that is installed, since it picks the build matching the GPU driver.
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
                 have_torch: bool | None = None, have_pytorch_extension: bool | None = None,
                 want_torch: bool = False) -> InstallPlan:
    """Decide what to install (arguments override the checks, for tests).

    Args:
        want_torch: the user asked for PyTorch (GPU, fine-tuning); also taken when PyTorch is
            installed already.
    """
    have_core = installed("napari_medsam") if have_core is None else have_core
    have_torch = installed("torch") if have_torch is None else have_torch
    if have_pytorch_extension is None:
        have_pytorch_extension = installed("PyTorchUtils")
    if have_core:
        return InstallPlan(message="napari-medsam is installed.")
    if want_torch or have_torch:
        from_extension = not have_torch and have_pytorch_extension
        plan = InstallPlan([f"{spec}[torch]"], torch_from_extension=from_extension,
                           backend="torch")
        torch_words = ("PyTorch is already installed." if have_torch else
                       "PyTorch will be installed first by the PyTorch extension, matching your "
                       "graphics card driver." if from_extension else
                       "PyTorch comes from PyPI (1-3 GB; for a build matching your GPU driver, "
                       "cancel and install the 'PyTorch' extension first).")
        plan.message = (
            "MedSAM needs the napari-medsam package with PyTorch (GPU, fine-tuning). "
            f"{torch_words} Install now? It takes a few minutes and Slicer does not respond "
            "until it is done. Your scene is not touched."
        )
        return plan
    plan = InstallPlan([spec], backend="onnxruntime")
    plan.message = (
        "MedSAM needs the napari-medsam package: the LiteMedSAM model run by ONNX Runtime on "
        "the CPU, about 300 MB, no PyTorch (for the GPU or fine-tuning, tick 'Install PyTorch' "
        "under Advanced first). Install now? It takes a minute or two and Slicer does not "
        "respond until it is done. Your scene is not touched."
    )
    return plan


def ensure_installed(confirm: Callable[[str], bool] | None = None,
                     status: Callable[[str], None] | None = None,
                     spec: str = DEFAULT_SPEC, want_torch: bool = False) -> bool:
    """Install what is missing (inside Slicer). Returns True when napari-medsam can be used.

    Args:
        confirm: asks the user (e.g. slicer.util.confirmOkCancelDisplay); None installs directly.
        status: shows progress text (a label, the status bar).
        spec: pip requirement for napari-medsam (a version pin or a wheel path).
        want_torch: install the PyTorch form (`napari-medsam[torch]`).
    """
    say = status or (lambda text: None)
    plan = plan_install(spec, want_torch=want_torch)
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
