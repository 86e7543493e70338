"""Atomic writes: a file or a folder appears complete or not at all, never half-written.

Every file the project writes (label maps, embeddings, metadata, exports, corrections, training
state) goes through `atomic_write`: a uniquely named temporary file in the target's folder, flushed
and fsynced, given the normal permissions of a new file (the umask is respected: `mkstemp` alone
would leave 0600), then renamed over the target. Folders (adapters, heads) are assembled in
`atomic_folder` and moved into place once complete.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import OutputError

_UMASK: int | None = None


def umask() -> int:
    """The process umask (read once: reading it means setting it for an instant)."""
    global _UMASK
    if _UMASK is None:
        current = os.umask(0o022)
        os.umask(current)
        _UMASK = current
    return _UMASK


def file_mode() -> int:
    """Permissions a newly created file gets from the umask (0644 under the usual 022)."""
    return 0o666 & ~umask()


def folder_mode() -> int:
    """Permissions a newly created folder gets from the umask (0755 under the usual 022)."""
    return 0o777 & ~umask()


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix


def atomic_write_path(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Write `path` atomically: `write(tmp)` fills a temporary file that then replaces `path`.

    The temporary file sits in the target's folder and keeps its suffix (some writers choose the
    format by it: nibabel, PIL, onnx); it is removed when `write` fails, so a failure leaves the
    old file (or nothing) in place. An operating-system failure (disk full, no permission, a
    file where a folder should be) is raised as `OutputError` in plain words.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                    suffix=_suffix(path))
        os.close(fd)
    except OSError as exc:
        raise _output_error(path, exc) from exc
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:  # the data reaches the disk before the rename
            os.fsync(handle.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OutputError):
            raise
        raise _output_error(path, exc) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _output_error(path: Path, exc: OSError) -> OutputError:
    """An OSError while writing `path`, in words: what happened and what is left."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno == errno.ENOSPC:
        advice = "Free some disk space and run again."
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        advice = "Choose a folder you can write to."
    else:
        advice = "Choose another place."
    kept = "The previous file is unchanged." if path.exists() else "Nothing was written."
    return OutputError(exc.errno, f"Could not write {path}: {reason}. {kept} {advice}")


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """`atomic_write_path` for writers that take an open binary file (numpy, json bytes)."""

    def fill(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            write(handle)

    return atomic_write_path(path, fill)


def atomic_text(path: str | Path, text: str) -> Path:
    """Write a text file (UTF-8) atomically."""
    data = text.encode("utf-8")
    return atomic_write(path, lambda handle: handle.write(data))


@contextlib.contextmanager
def atomic_folder(final: str | Path) -> Iterator[Path]:
    """Assemble a folder in a temporary sibling; on success it replaces `final` (the old one is
    kept until the new one is in place); on failure nothing changes.

        with atomic_folder(out) as tmp:
            save_file(..., tmp / "weights.safetensors")
    """
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    except OSError as exc:
        raise _output_error(final, exc) from exc
    try:
        yield tmp
        os.chmod(tmp, folder_mode())
        replace_folder(tmp, final)
    except OSError as exc:
        if isinstance(exc, OutputError):
            raise
        raise _output_error(final, exc) from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def replace_folder(tmp_folder: str | Path, final: str | Path) -> Path:
    """Move a fully written folder into place, keeping the old one until the new one is there."""
    final, tmp_folder = Path(final), Path(tmp_folder)
    recover_folder(final)
    backup = final.with_name(final.name + ".old")
    if final.exists():
        shutil.rmtree(backup, ignore_errors=True)
        os.replace(final, backup)
    os.replace(tmp_folder, final)
    shutil.rmtree(backup, ignore_errors=True)
    return final


def recover_folder(final: str | Path) -> Path:
    """Put back the previous folder when a process was killed between `replace_folder`'s two
    renames (the old folder moved aside, the new one not yet in place)."""
    final = Path(final)
    backup = final.with_name(final.name + ".old")
    if not final.exists() and backup.is_dir():
        os.replace(backup, final)
    return final
