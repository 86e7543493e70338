"""`napari-medsam embed IMAGE_OR_VOLUME`: fill the embedding cache ahead of annotation."""

from __future__ import annotations

import argparse

from .common import add_model_options, add_plane_option, check_image, make_predictor


def register(sub) -> None:
    p = sub.add_parser("embed", help="compute and cache embeddings of an image or every slice",
                       description="Compute the image embeddings once and store them in the "
                       "on-disk cache, so later clicks only run the small decoder.")
    p.add_argument("image", help="2D image, NIfTI volume or DICOM folder")
    add_plane_option(p)
    add_model_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..core.session import Session
    from ..core.volume import open_image

    data = open_image(args.image, args.plane)
    check_image(data)  # finite pixels, a usable size: before the model loads
    session = Session(make_predictor(args), preset=args.preset)
    session.set_image(data.data, is_volume=data.is_volume)
    bar = tqdm(total=session.n_slices, unit="slice", desc="embedding")

    def progress(done: int, total: int) -> None:
        bar.n = done
        bar.refresh()

    session.embed_all(progress=progress)
    bar.close()
    cache = session.predictor.cache
    print(f"{session.n_slices} slice(s) embedded: {session.predictor.encoder_calls} computed, "
          f"{session.n_slices - session.predictor.encoder_calls} from cache ({cache.disk_dir})")
    return 0
