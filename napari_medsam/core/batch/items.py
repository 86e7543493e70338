"""What a batch runs over: items found in a folder tree, a list file, DICOM series folders or a
manifest, and the content key that tells a finished item on a re-run.

One item is one image or volume (a DICOM series folder is one volume). Its `rel` path names its
outputs under the batch's output folder, so the input tree is mirrored there.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from fnmatch import fnmatch
from pathlib import Path

from ..errors import InputError
from ..io import IMAGE_SUFFIXES, NIFTI_SUFFIXES, _suffix

MANIFEST = "manifest.json"
LIST_SUFFIXES = (".txt", ".lst", ".list")
OUTPUT_MARK = ".medsam-"  # label maps written beside their input carry it; never an input


@dataclass(frozen=True)
class Item:
    """One image, volume or DICOM series to process.

    Attributes:
        path: the image file or DICOM folder.
        rel: its path relative to the source (names the outputs; unique in a batch).
        mask: the ground-truth label file (manifest items; `eval` needs it).
        dataset, case, modality: from the manifest (empty otherwise).
        data_dir: the manifest's folder (`pair` paths are relative to it).
        pair: the manifest pair as read (eval reads its targets from it).
    """

    path: str
    rel: str
    mask: str | None = None
    dataset: str = ""
    case: str = ""
    modality: str = ""
    data_dir: str | None = None
    pair: tuple[tuple[str, str], ...] | None = None

    @property
    def is_dicom_folder(self) -> bool:
        return Path(self.path).is_dir()

    def files(self) -> list[Path]:
        """The files whose bytes make this item: the image (every file of a DICOM folder),
        and the mask when there is one."""
        path = Path(self.path)
        files = sorted(f for f in path.iterdir() if f.is_file()) if path.is_dir() else [path]
        return files + ([Path(self.mask)] if self.mask else [])

    def as_pair(self) -> dict:
        return dict(self.pair or ())


def content_key(item: Item, options: dict) -> str:
    """sha256 of the item's bytes (file by file, with their names) and the task's options:
    the same input asked the same way gives the same key, wherever the files live."""
    digest = hashlib.sha256()
    for file in item.files():
        digest.update(f"{file.name}\0".encode())
        try:
            with open(file, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        except OSError as exc:  # hashed as missing: the task itself reports the error
            digest.update(f"unreadable:{exc.errno}".encode())
        digest.update(b"\0")
    digest.update(json.dumps(options, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def discover(source: str | Path, exclude: str | Path | None = None, pattern: str | None = None,
             datasets: list[str] | None = None, max_cases: int | None = None) -> list[Item]:
    """The items of `source`.

    Args:
        source: a folder with manifest.json (or the manifest itself): its pairs; a list file
            (.txt: one path a line, relative to the list's folder, # comments); a folder: every
            image / NIfTI below it and every DICOM series folder; or one image / DICOM folder.
        exclude: a folder never searched (the batch's output folder).
        pattern: keep items whose `rel` path matches this glob (e.g. "*/images/*").
        datasets, max_cases: manifest selection, as `eval` does it.

    Raises InputError when nothing is found or the source does not exist.
    """
    src = Path(source).expanduser()
    if not src.exists():
        raise InputError(f"Batch source not found: {src}")
    if src.is_dir() and (src / MANIFEST).is_file():
        src = src / MANIFEST
    if src.is_file() and src.name == MANIFEST:
        items = manifest_items(src, datasets, max_cases)
    elif src.is_file() and src.suffix.lower() in LIST_SUFFIXES:
        items = list_items(src)
    elif src.is_dir() and not dicom_files(src):
        items = tree_items(src, exclude)
    else:
        items = [Item(str(src), src.name)]
    if pattern:
        items = [it for it in items if fnmatch(it.rel, pattern)]
    if not items:
        raise InputError(f"No images, volumes or DICOM series found in {source}"
                         + (f" matching '{pattern}'." if pattern else "."))
    rels = [it.rel for it in items]
    if len(set(rels)) != len(rels):
        twice = sorted({r for r in rels if rels.count(r) > 1})[:3]
        raise InputError(f"Two inputs would write the same outputs: {', '.join(twice)}. "
                         "List each image once.")
    return items


def manifest_items(path: Path, datasets: list[str] | None = None,
                   max_cases: int | None = None) -> list[Item]:
    """One item per manifest pair (the same selection as `eval`)."""
    from ..evaluation import filter_pairs, load_manifest

    root = path.parent
    return [Item(str(root / p["image"]), p["image"], str(root / p["mask"]) if p.get("mask")
                 else None, p.get("dataset", ""), p.get("case", ""), p.get("modality", ""),
                 str(root), tuple(sorted((k, str(v)) for k, v in p.items())))
            for p in filter_pairs(load_manifest(root), datasets, max_cases)]


def list_items(path: Path) -> list[Item]:
    """One item per line of a list file; `rel` is relative to the entries' common folder."""
    paths = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            entry = Path(line).expanduser()
            paths.append(entry if entry.is_absolute() else path.parent / entry)
    if not paths:
        return []
    absolute = [os.path.abspath(p) for p in paths]
    common = os.path.commonpath([os.path.dirname(p) for p in absolute])
    return [Item(str(p), os.path.relpath(a, common)) for p, a in zip(paths, absolute, strict=True)]


def tree_items(root: Path, exclude: str | Path | None = None) -> list[Item]:
    """Every image / NIfTI file below `root` and every folder holding a DICOM series."""
    skip = Path(exclude).resolve() if exclude else None
    items = []
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and (skip is None or (here / d).resolve() != skip))
        if dicom_files(here):
            items.append(Item(str(here), here.relative_to(root).as_posix()))
            continue
        for name in sorted(files):
            if name.startswith(".") or OUTPUT_MARK in name:
                continue
            if _suffix(name) in IMAGE_SUFFIXES + NIFTI_SUFFIXES:
                items.append(Item(str(here / name), (here / name).relative_to(root).as_posix()))
    return items


def dicom_files(folder: Path) -> list[Path]:
    """The DICOM files directly in `folder` (by the 'DICM' preamble), sorted; [] for a file."""
    if not folder.is_dir():
        return []
    found = []
    for file in sorted(folder.iterdir()):
        if not file.is_file() or file.name.startswith("."):
            continue
        if file.suffix.lower() == ".dcm" or not file.suffix:
            try:
                with open(file, "rb") as handle:
                    handle.seek(128)
                    if handle.read(4) == b"DICM":
                        found.append(file)
            except OSError:
                continue
    return found


def item_dict(item: Item) -> dict:
    """A JSON-friendly form of an item (the ledger keeps it)."""
    out = asdict(item)
    out["pair"] = item.as_pair() if item.pair else None
    return out
