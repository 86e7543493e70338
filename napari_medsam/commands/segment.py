"""`napari-medsam segment IMAGE --box X0 Y0 X1 Y1 [--slice Z] -o OUT`."""

from __future__ import annotations

import argparse

from .common import add_model_options, add_plane_option, make_predictor


def register(sub) -> None:
    p = sub.add_parser(
        "segment",
        help="segment one object from a box and/or clicks",
        description="Segment one object in a 2D image or one slice of a volume. "
        "Coordinates are image pixels (x = column, y = row).",
    )
    p.add_argument("image", help="PNG/TIFF/JPEG/BMP image, NIfTI volume or DICOM folder")
    p.add_argument("--box", nargs=4, type=float, metavar=("X0", "Y0", "X1", "Y1"))
    p.add_argument(
        "--point",
        nargs=3,
        type=float,
        action="append",
        default=[],
        metavar=("X", "Y", "LABEL"),
        help="a click; LABEL 1 positive, 0 negative (repeat for several)",
    )
    p.add_argument(
        "--slice", type=int, default=None, help="slice index (volumes); default: the middle slice"
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
    data = open_image(args.image, args.plane)
    session = Session(make_predictor(args), preset=args.preset)
    session.set_image(data.data, is_volume=data.is_volume)
    if data.is_volume:
        session.set_slice(args.slice if args.slice is not None else data.n_slices // 2)
    elif args.slice not in (None, 0):
        raise InputError(f"{args.image} is a 2D image: it has no slice {args.slice}.")
    mask = None
    if args.box is not None:
        mask = session.set_box(args.box)
    for x, y, label in args.point:
        mask = session.add_point(x, y, positive=bool(label))
    score = session.state.score  # the model's IoU estimate; committing starts a new object
    session.commit(label=1, mask=mask) if mask.any() else None
    out = data.write_labels(args.output, session.labels)
    where = f" on slice {session.current_slice}" if data.is_volume else ""
    print(f"wrote {out} ({int(mask.sum())} pixels{where}, score {score:.2f})")
    return 0
