"""Keep triton out of a process whose OpenGL driver already loaded LLVM (imported first).

Loading the model imports torchvision, which imports torch._dynamo and with it triton; triton's
own LLVM crashes the process (segmentation fault) when Mesa's OpenGL driver (Intel, AMD,
llvmpipe, Xvfb) has already put the system's libLLVM in the process, which napari's canvas does
before any plugin is opened. The plugin never needs triton (no torch.compile), so in that case
triton is marked as absent, which torch reads as "triton not installed". This module does it
when imported (the widget imports it before anything that pulls in torch) and the widget checks
again before loading a model.
"""

from __future__ import annotations

import logging
import sys

log = logging.getLogger(__name__)


def avoid_llvm_clash() -> bool:
    """Mark triton absent when libLLVM is already mapped and triton is not imported yet.

    Returns True when it did so (see the module docstring for why).
    """
    if "triton" in sys.modules:
        return False
    try:
        with open("/proc/self/maps") as maps:
            clash = any("libLLVM" in line for line in maps)
    except OSError:  # not Linux
        return False
    if clash:
        sys.modules["triton"] = None  # type: ignore[assignment]
        log.info("OpenGL driver uses LLVM: triton disabled in this process to avoid a crash.")
    return clash


avoid_llvm_clash()
