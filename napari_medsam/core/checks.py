"""One place for each input rule, used by the CLI, napari and Slicer alike.

Every check raises `InputError` (or `CheckpointError` for model files) with a message that says
what is wrong and what to do, and is meant to run at the edge, before any work starts: argparse
`type=` functions (`commands/common.arg`), the first lines of a verb, the readers in `io`, the
embedding cache and the adapter loaders. numpy only; torch is imported only to ask whether a GPU
is there when one is asked for.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .errors import CheckpointError, InputError

LABEL_MAX = int(np.iinfo(np.uint16).max)  # label maps are uint16 (Session.labels)


def _named(what: str, text: str) -> str:
    return f"{what} {text}" if what else text


# ---- numbers -------------------------------------------------------------------------------
def whole(value, what: str = "", minimum: int | None = 1, maximum: int | None = None) -> int:
    """An integer within [minimum, maximum] (argparse gives text)."""
    try:
        number = float(value)
        if not number.is_integer():
            raise ValueError
        number = int(number)
    except (TypeError, ValueError, OverflowError):
        raise InputError(_named(what, f"must be a whole number, not '{value}'.")) from None
    if minimum is not None and number < minimum:
        raise InputError(_named(what, f"must be {minimum} or more, not {number}."))
    if maximum is not None and number > maximum:
        raise InputError(_named(what, f"must be {maximum} or less, not {number}."))
    return number


def number(value, what: str = "", above: float | None = None,
           at_most: float | None = None) -> float:
    """A finite number, greater than `above` and at most `at_most` when given."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise InputError(_named(what, f"must be a number, not '{value}'.")) from None
    if not math.isfinite(out):
        raise InputError(_named(what, f"must be a finite number, not '{value}'."))
    if above is not None and out <= above:
        raise InputError(_named(what, f"must be more than {above:g}, not {out:g}."))
    if at_most is not None and out > at_most:
        raise InputError(_named(what, f"must be {at_most:g} or less, not {out:g}."))
    return out


def positive(value, what: str = "") -> float:
    """A finite number above 0 (minutes, learning rate...)."""
    return number(value, what, above=0.0)


def fraction(value, what: str = "") -> float:
    """A share strictly between 0 and 1 (e.g. the validation fraction)."""
    out = number(value, what)
    if not 0.0 < out < 1.0:
        raise InputError(_named(what, f"must be between 0 and 1 (e.g. 0.25), not {out:g}."))
    return out


def choice(value, options: Iterable, what: str = "") -> str:
    options = [str(o) for o in options]
    if str(value) not in options:
        raise InputError(_named(what, f"must be one of {', '.join(options)}, not '{value}'."))
    return str(value)


def label_value(value, what: str = "label") -> int:
    """A label id that a label map can hold: 1 to 65535 (0 is the background)."""
    out = whole(value, what, minimum=None)
    if not 1 <= out <= LABEL_MAX:
        raise InputError(f"{what} must be between 1 and {LABEL_MAX} (0 is the background; label "
                         f"maps hold 16-bit values), not {out}.")
    return out


def point_label(value) -> int:
    """A click's label: exactly 1 (positive) or 0 (negative); nothing else is guessed."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        out = float("nan")
    if out not in (0.0, 1.0):
        raise InputError(f"A click's LABEL must be 1 (positive) or 0 (negative), not '{value}'.")
    return int(out)


# ---- pixels --------------------------------------------------------------------------------
def volume_pixels(image: np.ndarray) -> np.ndarray:
    """A volume / 2D+t sequence (slices, rows, columns) with finite voxels (each slice is then
    checked like a 2D image by `predictor.validate_image`)."""
    image = np.asarray(image)
    if image.ndim != 3 or min(image.shape) < 1 or image.size == 0:
        raise InputError(f"A volume must be (slices, rows, columns), got {image.shape}.")
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        bad = int((~np.isfinite(image)).sum())
        raise InputError(f"The volume has {bad} NaN or infinite voxels. Fill them before "
                         "segmenting.")
    return image


# ---- prompts -------------------------------------------------------------------------------
def prompts(points, labels, box, shape: tuple[int, int]):
    """Prompts checked in image pixels against an image of `shape` (H, W).

    Returns (coords (N, K, 2), labels (N, K), boxes (N, 4): corners ordered and clipped), None
    where absent. The one rule set for `Predictor.predict` and the CLI verbs (which call it
    before the model loads).
    """
    h, w = int(shape[0]), int(shape[1])
    coords = lab = boxes = None
    if points is not None and len(np.asarray(points)) > 0:
        coords = np.asarray(points, dtype=np.float64)
        if coords.shape[-1] != 2 or coords.ndim not in (2, 3):
            raise InputError(f"Points must be (K, 2) x/y pairs, got shape {coords.shape}.")
        if labels is None:
            raise InputError("Each point needs a label: 1 positive, 0 negative.")
        lab = np.asarray(labels, dtype=np.float64).reshape(coords.shape[:-1])
        if not np.isin(lab, (0, 1)).all():
            raise InputError("Point labels must be 1 (positive) or 0 (negative).")
        lab = lab.astype(np.int64)
        if not np.isfinite(coords).all():
            raise InputError("A point has a missing (NaN) coordinate.")
        outside = (coords[..., 0] < -0.5) | (coords[..., 0] > w - 0.5)
        outside |= (coords[..., 1] < -0.5) | (coords[..., 1] > h - 0.5)
        if outside.any():
            raise InputError(
                f"A point lies outside the image ({w} x {h} pixels): "
                f"{coords[outside][0].tolist()}."
            )
        coords = coords.reshape(-1 if coords.ndim == 3 else 1, *coords.shape[-2:])
        lab = lab.reshape(coords.shape[:2])
    if box is not None:
        boxes = np.asarray(box, dtype=np.float64).reshape(-1, 4)
        if not np.isfinite(boxes).all():
            raise InputError("A box has a missing (NaN) coordinate.")
        x0, y0 = np.minimum(boxes[:, 0], boxes[:, 2]), np.minimum(boxes[:, 1], boxes[:, 3])
        x1, y1 = np.maximum(boxes[:, 0], boxes[:, 2]), np.maximum(boxes[:, 1], boxes[:, 3])
        if ((x1 <= 0) | (y1 <= 0) | (x0 >= w - 1) | (y0 >= h - 1)).any():
            raise InputError(
                f"A box lies outside the image ({w} x {h} pixels): draw it over the image."
            )
        if (((x1 - x0) < 1) | ((y1 - y0) < 1)).any():
            raise InputError("A box has no area: drag it wider and taller.")
        boxes = np.stack(
            [np.clip(x0, 0, w - 1), np.clip(y0, 0, h - 1),
             np.clip(x1, 0, w - 1), np.clip(y1, 0, h - 1)], axis=1,
        )
    if coords is None and boxes is None:
        raise InputError("Give at least one prompt: a box or a point.")
    if coords is not None and boxes is not None and len(coords) not in (1, len(boxes)):
        raise InputError("Give one point set for all boxes, or one per box.")
    return coords, lab, boxes


def nothing_to_segment(labels, boxes) -> str:
    """Why a prompt asks for no object at all (only negative clicks, no box), or ''."""
    if boxes is None and labels is not None and not (np.asarray(labels) == 1).any():
        return ("Only negative clicks: they say where the object is not, so the mask stays "
                "empty. Add a positive click or a box on the object.")
    return ""


def uninformative(image: np.ndarray, preset, bounds=None) -> str:
    """Why an image (or slice) holds nothing to segment as the model would see it, or ''.

    An image whose pixels all have one value (all zero, a padding slice), or that the intensity
    preset maps to less than one grey level (a CT window showing only air), gives the model no
    structure: any mask would be invented, so the predictor answers with an empty one.
    """
    raw = np.asarray(image)
    if raw.size == 0:
        return ""
    low, high = float(np.nanmin(raw)), float(np.nanmax(raw))
    if low == high:
        return "The image is uniform (every pixel has the same value): nothing to segment."
    lo, hi = bounds if bounds is not None else preset.bounds(raw)
    scale = max(float(hi) - float(lo), 1e-8)

    def shown(v: float) -> float:  # the preset's mapping (linear, clipped): no image copy
        return min(max((v - float(lo)) / scale, 0.0), 1.0)

    if shown(high) - shown(low) < 1.0 / 255.0:
        return (f"The image looks uniform under the intensity preset '{preset.name}' (less than "
                "one grey level of contrast): nothing to segment. Try another preset.")
    return ""


# ---- devices -------------------------------------------------------------------------------
_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?|mps)$")


def device_name(value) -> str:
    """The spelling of a torch device: cpu, cuda, cuda:N or mps (no torch import)."""
    text = str(value).strip().lower()
    if not _DEVICE.match(text):
        raise InputError(f"Unknown device '{value}': use cpu, cuda (or cuda:N) or mps.")
    return text


def device_available(value) -> str:
    """A device torch can use here; a GPU that is not there is a clear error, not a crash."""
    text = device_name(value)
    if text == "cpu":
        return text
    import torch

    if text.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(text.split(":")[1]) if ":" in text else 0
        if count == 0:
            raise InputError(f"--device {text}: torch sees no CUDA GPU on this machine (no "
                             "NVIDIA driver, or a CPU-only torch). Use --device cpu, or leave "
                             "it out to pick the GPU only when there is one.")
        if index >= count:
            raise InputError(f"--device {text}: this machine has {count} CUDA GPU(s) "
                             f"(cuda:0 to cuda:{count - 1}).")
    elif text == "mps" and not (getattr(torch.backends, "mps", None)
                                and torch.backends.mps.is_available()):
        raise InputError("--device mps: Apple's GPU (MPS) is not available here; use cpu.")
    return text


# ---- paths ---------------------------------------------------------------------------------
def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _writable_ancestor(path: Path, what: str) -> Path:
    """The first existing folder above `path`, checked to be a folder we may write in."""
    parent = path.parent
    while not parent.exists():
        if parent == parent.parent:
            break
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise InputError(f"Cannot write the {what} {path}: {parent} is a file, not a folder. "
                         "Choose another place.")
    try:
        _try_write(parent)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise InputError(f"Cannot write the {what} {path}: the folder {parent} is not writable "
                         f"({reason}). Choose a folder you can write to.") from None
    return parent


def _try_write(folder: Path) -> None:
    """Create and remove a file in `folder` (os.access alone is fooled by read-only mounts)."""
    with tempfile.TemporaryFile(dir=folder):
        pass


def output_file(path, suffixes: Iterable[str] | None = None, what: str = "output") -> Path:
    """Check, before any work, that a file can be written at `path`.

    Args:
        suffixes: the accepted endings (e.g. (".png", ".tif", ".nii.gz")); None: any.
        what: the name used in messages ("output", "--json file", ...).
    """
    text = str(path)
    path = Path(text).expanduser()
    options = tuple(suffixes or ())
    example = f"{path / ('result' + options[0])}" if options else f"{path / 'result'}"
    if text.endswith(("/", os.sep)) or path.is_dir():
        raise InputError(f"The {what} {text} is a folder: give a file name, e.g. {example}.")
    if options and _suffix(path) not in options:
        found = f"'{_suffix(path)}'" if _suffix(path) else "no file type"
        raise InputError(f"The {what} {path.name} has {found}: use one of "
                         f"{', '.join(options)}.")
    _writable_ancestor(path, what)
    return path


def output_folder(path, what: str = "output folder") -> Path:
    """Check, before any work, that a folder can be created or replaced at `path`."""
    path = Path(str(path)).expanduser()
    if path.exists() and not path.is_dir():
        raise InputError(f"The {what} {path} is a file: give a folder name instead.")
    _writable_ancestor(path, what)
    return path


# ---- inputs --------------------------------------------------------------------------------
_SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"BM": "BMP",
    b"II*\x00": "TIFF", b"MM\x00*": "TIFF", b"II+\x00": "BigTIFF", b"MM\x00+": "BigTIFF",
}


def image_file(path) -> str:
    """The format a 2D image file really holds (by its first bytes), or a clear InputError for
    an empty file or one that is not an image (a text or HTML page saved as .png...)."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise InputError(f"{path} is empty (0 bytes): it is not an image. Save or copy it again.")
    with open(path, "rb") as handle:
        head = handle.read(16)
    for magic, kind in _SIGNATURES.items():
        if head.startswith(magic):
            return kind
    shown = head[:12].decode("ascii", "replace")
    shown = "".join(c if c.isprintable() else "." for c in shown)
    raise InputError(f"{path} is not a readable image: its contents are not PNG, JPEG, TIFF or "
                     f"BMP (it starts with '{shown}'). Check that it is the right file.")


def available_memory() -> int | None:
    """Bytes of memory free for new work ($NAPARI_MEDSAM_MEMORY overrides), None if unknown."""
    forced = os.environ.get("NAPARI_MEDSAM_MEMORY")
    if forced:
        try:
            return int(float(forced))
        except ValueError:
            pass
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def fits_in_memory(shape, itemsize: int, name: str, volume: bool | None = None) -> None:
    """Refuse, before anything is allocated, an image too large to read and work on here.

    The estimate counts the pixels as read plus the working copies that follow: for a volume its
    displayed copy, the 16-bit label map and the intensity range; for a 2D image the float RGB
    copy the encoder is fed.
    """
    shape = tuple(int(s) for s in shape)
    pixels = int(np.prod(shape, dtype=np.float64)) if shape else 0
    volume = (len(shape) >= 3 and shape[-1] not in (3, 4)) if volume is None else volume
    per_pixel = 2 * itemsize + 6 if volume else itemsize + 18
    need = pixels * per_pixel
    free = available_memory()
    if free is None or need <= free:
        return
    raise InputError(
        f"{name} is too large to open here: {' x '.join(map(str, shape))} pixels "
        f"({_size(pixels * itemsize)} as stored, about {_size(need)} to work on) and "
        f"{_size(free)} of memory is free. Crop it or open a part of it (a sub-volume, fewer "
        "slices) first."
    )


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


# ---- cached and downloaded artefacts -------------------------------------------------------
def embedding_arrays(features: np.ndarray, original_size, input_size,
                     feature_shape: tuple[int, ...] | None) -> None:
    """Raise ValueError when a stored embedding is not what the encoder gives (shape, dtype,
    finite values, sizes): the cache then discards it and computes it again."""
    if features.dtype.kind != "f":
        raise ValueError(f"features of type {features.dtype}")
    if features.ndim != 3 or (feature_shape is not None
                              and tuple(features.shape) != tuple(feature_shape)):
        raise ValueError(f"features of shape {tuple(features.shape)}, expected "
                         f"{tuple(feature_shape) if feature_shape else '3 dimensions'}")
    if not np.isfinite(features).all():
        raise ValueError("features with NaN or infinite values")
    sizes = [np.asarray(original_size).ravel(), np.asarray(input_size).ravel()]
    if any(s.size != 2 or (s <= 0).any() for s in sizes):
        raise ValueError("image sizes missing or not positive")


def safetensors_file(path, what: str = "adapter") -> None:
    """A CheckpointError in plain words when a `.safetensors` file is missing or damaged."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"The {what} file {path} is missing: copy or train it again.")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as handle:
            for key in handle.keys():  # reading each tensor's header checks offsets and sizes
                handle.get_slice(key).get_shape()
    except Exception as exc:  # safetensors raises its own error type for every kind of damage
        raise CheckpointError(
            f"The {what} file {path} is damaged ({type(exc).__name__}: {exc}). Copy or train "
            "it again."
        ) from None


def adapter_files(folder) -> dict:
    """An adapter folder's files, checked before anything loads: peft's config (JSON), the
    weights (safetensors) and our metadata when present. Returns the metadata ({} without)."""
    import json

    from .storage import METADATA_FILE, read_metadata

    folder = Path(folder)
    config = folder / "adapter_config.json"
    try:
        json.loads(config.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{config} is missing or damaged ({exc}): {folder} is not a "
                              "complete adapter. Copy or train it again.") from None
    safetensors_file(folder / "adapter_model.safetensors", "adapter")
    return read_metadata(folder) if (folder / METADATA_FILE).is_file() else {}
