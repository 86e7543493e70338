"""`napari-medsam segment IMAGE --box X0 Y0 X1 Y1 [--slice Z] -o OUT`."""

from __future__ import annotations

import argparse

from ..core import checks
from .common import (
    LABEL_OUTPUTS,
    VOLUME_OUTPUTS,
    add_model_options,
    add_plane_option,
    add_point_option,
    arg,
    check_image,
    check_prompts,
    make_predictor,
)


def register(sub) -> None:
    p = sub.add_parser(
        "segment",
        help="segment one object from a box and/or clicks",
        description="Segment one object in a 2D image or one slice of a volume. "
        "Coordinates are image pixels (x = column, y = row).",
    )
    p.add_argument("image", help="PNG/TIFF/JPEG/BMP image, NIfTI volume or DICOM folder")
    p.add_argument("--box", nargs=4, type=arg(checks.number), metavar=("X0", "Y0", "X1", "Y1"))
    add_point_option(p)
    p.add_argument(
        "--slice", type=arg(checks.whole, minimum=0), default=None,
        help="slice index (volumes); default: the middle slice"
    )
    p.add_argument(
        "-o",
        "--output",
        required=True,
        help="output mask: .png/.tif for 2D, .nii.gz keeps the volume's geometry",
    )
    add_plane_option(p)
    add_model_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..core.errors import InputError
    from ..core.session import Session
    from ..core.volume import open_image

    if args.box is None and not args.point:
        raise InputError("Give a prompt: --box X0 Y0 X1 Y1 and/or --point X Y LABEL.")
    checks.output_file(args.output, LABEL_OUTPUTS)  # before any work: nothing is lost
    data = open_image(args.image, args.plane)
    if data.is_volume:
        checks.output_file(args.output, VOLUME_OUTPUTS, "output for a volume")
        z = args.slice if args.slice is not None else data.n_slices // 2
        z = data.check_slice(z) if hasattr(data, "check_slice") else z
        check_prompts(args, data.data.shape[1:3])
    elif args.slice not in (None, 0):
        raise InputError(f"{args.image} is a 2D image: it has no slice {args.slice}.")
    else:
        check_prompts(args, data.data.shape[:2])
    check_image(data)  # finite pixels, a usable size: before the model loads
    session = Session(make_predictor(args), preset=args.preset)
    session.set_image(data.data, is_volume=data.is_volume)
    if data.is_volume:
        session.set_slice(z)
    mask = None
    if args.box is not None:
        mask = session.set_box(args.box)
    for x, y, label in args.point:
        mask = session.add_point(x, y, positive=bool(label))
    score = session.state.score  # the model's IoU estimate; committing starts a new object
    if session.state.note:
        print(f"note: {session.state.note}")
    session.commit(label=1, mask=mask) if mask.any() else None
    out = data.write_labels(args.output, session.labels)
    where = f" on slice {session.current_slice}" if data.is_volume else ""
    print(f"wrote {out} ({int(mask.sum())} pixels{where}, score {score:.2f})")
    return 0
