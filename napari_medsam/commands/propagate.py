"""`napari-medsam propagate VOLUME --slice Z --box X0 Y0 X1 Y1 -o seg.nii.gz`."""

from __future__ import annotations

import argparse

from ..core import checks
from .common import (
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
        "propagate", help="segment one object through a volume or a 2D+t sequence",
        description="Segment one object on one slice (box and/or clicks), then slice after "
        "slice up and down until it ends. Slices are those of --plane, as in every verb "
        "(axial: anterior at the top, the patient's right on the left, slice index growing "
        "towards the head); --slice/--box/--point are pixels of those slices (x = column, "
        "y = row). The output has the input's shape and affine.")
    p.add_argument("volume", help="NIfTI volume or DICOM series folder (with --sequence: a "
                   "2D+t NIfTI, multi-frame DICOM, multi-page TIFF or a folder of frames)")
    p.add_argument("--slice", type=arg(checks.whole, minimum=0), default=None,
                   help="slice (or frame) to start from; default: the middle one")
    p.add_argument("--box", nargs=4, type=arg(checks.number), metavar=("X0", "Y0", "X1", "Y1"))
    add_point_option(p)
    p.add_argument("--sequence", action="store_true",
                   help="the input is a 2D+t sequence: propagate through time")
    p.add_argument("--direction", default="both", choices=["both", "up", "down"],
                   help="up = increasing slice index")
    p.add_argument("--max-slices", type=arg(checks.whole, minimum=0), default=None,
                   help="at most N slices each way (0: the start slice only)")
    p.add_argument("--label", type=arg(checks.label_value), default=1,
                   help="label value written, 1 to 65535 (default 1)")
    p.add_argument("-o", "--output", required=True,
                   help="output label volume (.nii.gz), same shape and affine as the input")
    add_plane_option(p)
    add_model_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from tqdm import tqdm

    from ..core.errors import CancelledError, InputError
    from ..core.propagation import get_settings
    from ..core.session import Session
    from ..core.volume import read_sequence, read_volume

    if args.box is None and not args.point:
        raise InputError("Give a prompt: --box X0 Y0 X1 Y1 and/or --point X Y LABEL.")
    checks.output_file(args.output, VOLUME_OUTPUTS)  # before the propagation: nothing is lost
    vol = read_sequence(args.volume) if args.sequence else read_volume(args.volume, args.plane)
    z = vol.check_slice(args.slice if args.slice is not None else vol.n_slices // 2)
    check_prompts(args, vol.data.shape[1:3])
    print(f"{args.volume}: {vol.describe()}")
    check_image(vol)  # finite pixels, a usable size: before the model loads
    session = Session(make_predictor(args), preset=args.preset)
    session.set_image(vol.data, is_volume=True)
    session.set_slice(z)
    mask = session.set_box(args.box) if args.box is not None else None
    for x, y, label in args.point:
        mask = session.add_point(x, y, positive=bool(label))
    if mask is None or not mask.any():
        why = session.state.note or "adjust the box or clicks."
        raise InputError(f"The prompt gave an empty mask on slice {z}: {why}")
    settings = get_settings("time" if args.sequence else "volume")
    if args.max_slices is not None:
        settings = replace(settings, max_slices=args.max_slices)
    bar = tqdm(unit="slice", desc="propagating")

    def progress(done: int, total: int) -> None:
        bar.total, bar.n = total, done
        bar.refresh()

    code = 0
    try:
        result = session.propagate(label=args.label, direction=args.direction,
                                   settings=settings, progress=progress)
    except (KeyboardInterrupt, CancelledError):
        result, code = None, 130
    finally:
        bar.close()
    out = vol.write_labels(args.output, session.labels)
    if result is None:
        print(f"cancelled: wrote the slices finished so far to {out}")
        return code
    print(result.summary())
    print(f"wrote {out} ({int((session.labels == args.label).sum())} voxels)")
    return 0
