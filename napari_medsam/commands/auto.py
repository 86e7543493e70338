"""`napari-medsam auto IMAGE --head H -o OUT`: every structure, no click, from a trained head."""

from __future__ import annotations

import argparse

from ..core import checks
from .common import (
    LABEL_OUTPUTS,
    VOLUME_OUTPUTS,
    add_model_options,
    add_plane_option,
    arg,
    check_image,
    make_predictor,
)


def register(sub) -> None:
    p = sub.add_parser("auto", help="segment every structure automatically with a trained head",
                       description="Segment all structures a head knows (e.g. LV, myocardium, "
                       "LA) with no click. A volume is segmented slice by slice, then each "
                       "structure is made consistent across slices. The result is a starting "
                       "point: open it and correct it.")
    p.add_argument("image", help="2D image, NIfTI volume or DICOM folder")
    p.add_argument("--head", required=True,
                   help=f"a shipped head: {'; '.join(_shipped()) or 'none installed'}; or the "
                        "folder of a head made with train-head")
    p.add_argument("--mode", default=None, choices=["dense", "box", "refine"],
                   help="how the head prompts the model (default: the head's validated choice)")
    p.add_argument("--slice", type=arg(checks.whole, minimum=0), default=None,
                   help="volumes: only this slice (default: every slice, then each structure "
                        "made consistent across slices: islands and end slivers dropped, "
                        "gaps filled, one more slice tried past each end, small pieces apart "
                        "from a structure's main one dropped)")
    p.add_argument("--slice-by-slice", action="store_true",
                   help="volumes: keep every slice as the head segmented it (no consistency "
                        "pass across slices)")
    p.add_argument("-o", "--output", required=True,
                   help="output label map: .png/.tif for 2D, .nii.gz keeps the volume's geometry")
    add_plane_option(p)
    add_model_options(p)
    p.set_defaults(func=run)


def _shipped() -> list[str]:
    """The shipped heads with their modality and structures, e.g. "camus-patch (echo: LV,
    myocardium, LA)" (no torch import: help must stay fast)."""
    from ..core.autoseg.store import describe, list_heads

    return [describe(folder) for folder in list_heads().values()]


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..core.autoseg import load_head
    from ..core.autoseg.store import resolve_head
    from ..core.errors import InputError
    from ..core.session import Session
    from ..core.volume import open_image

    checks.output_file(args.output, LABEL_OUTPUTS)  # before any work: nothing is lost
    resolve_head(args.head)  # an unknown head is refused before the model loads
    data = open_image(args.image, args.plane)
    if data.is_volume:
        checks.output_file(args.output, VOLUME_OUTPUTS, "output for a volume")
        if args.slice is not None and hasattr(data, "check_slice"):
            data.check_slice(args.slice)
    elif args.slice not in (None, 0):
        raise InputError(f"{args.image} is a 2D image: it has no slice {args.slice}.")
    check_image(data)  # finite pixels, a usable size: before the model loads
    session = Session(make_predictor(args), preset=args.preset)
    session.set_image(data.data, is_volume=data.is_volume)
    head = load_head(args.head, session.predictor)
    slices = [args.slice] if (data.is_volume and args.slice is not None) else \
        list(range(session.n_slices))
    blank = []
    if data.is_volume and args.slice is None:  # a volume as a volume (autoseg.volume)
        bar = tqdm(unit="step", desc="auto")

        def progress(done: int, total: int) -> None:
            bar.total, bar.n = total, done
            bar.refresh()

        session.auto_volume(head, args.mode, consistent=not args.slice_by_slice,
                            progress=progress)
        bar.close()
    else:
        for z in slices:
            session.auto(head, mode=args.mode, z=z, commit=True)
            if session.predictor.blank:
                blank.append(z)
    out = data.write_labels(args.output, session.labels)
    counts = {name: int((session.labels == v).sum())
              for v, name in zip(head.structures, head.names, strict=True)}
    found = ", ".join(f"{name} {n} px" for name, n in counts.items())
    print(f"wrote {out}: {found} ({len(slices)} slice(s), head '{args.head}')")
    if blank:
        where = f"{len(blank)} uniform slice(s) left empty" if data.is_volume else \
            "the image is uniform: left empty"
        print(f"note: {where} (nothing to segment there).")
    if not any(counts.values()):
        print("note: the head found none of its structures in this image; is it the right "
              "head for this kind of image?")
    return 0
