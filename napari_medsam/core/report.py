"""What a user is told when something fails: the same words in the CLI, napari and Slicer.

An expected failure (`MedSAMError`: bad input, a damaged file, no space left) is its own plain
message. Running out of memory gets a plain message too. Anything else is a bug: the user gets a
short message naming a log file that holds the traceback, never the traceback itself.
"""

from __future__ import annotations

import datetime as _dt
import os
import traceback
from dataclasses import dataclass
from pathlib import Path

from .errors import MedSAMError

EXIT_INPUT = 2  # an expected failure the user can fix (also argparse's usage errors)
EXIT_BUG = 70  # sysexits' EX_SOFTWARE: an unexpected failure, details in the log file


@dataclass
class Failure:
    """text: what to show; code: the CLI exit code; log: the traceback's file (bugs only)."""

    text: str
    code: int
    log: Path | None = None


def log_folder() -> Path:
    """<per-user cache>/logs ($NAPARI_MEDSAM_CACHE/logs when set)."""
    from .embeddings import default_cache_dir

    return default_cache_dir() / "logs"


def write_log(exc: BaseException, context: str = "") -> Path | None:
    """Write the traceback of `exc` to a new log file; its path, or None when none could be
    written (the message then says so)."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = log_folder() / f"error-{stamp}-{os.getpid()}.log"
    from .. import __version__

    text = (f"napari-medsam {__version__}\n{context}\n\n"
            + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    try:
        from .atomic import atomic_text

        return atomic_text(path, text)
    except Exception:  # never let the report itself fail
        return None


def explain(exc: BaseException, context: str = "") -> Failure:
    """The message and exit code for a failure (a bug's traceback goes to a log file)."""
    if isinstance(exc, MedSAMError):
        return Failure(str(exc), EXIT_INPUT)
    if isinstance(exc, MemoryError):
        return Failure("Ran out of memory. Close other programs, or work on a smaller image (crop "
                       "it, or fewer slices), and try again.", EXIT_INPUT)
    log = write_log(exc, context)
    what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    where = f"The details are in {log}" if log else "No log file could be written"
    return Failure(f"An unexpected problem ({what}). {where}; please report it.", EXIT_BUG, log)


def user_message(exc: BaseException, context: str = "") -> str:
    """`explain(exc).text`: what napari and Slicer show."""
    return explain(exc, context).text
