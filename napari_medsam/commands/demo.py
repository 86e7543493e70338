"""`napari-medsam demo`: the main job on the built-in model and the bundled sample CT.

Headless (or with --headless) it segments organs of the sample from boxes, writes an overlay PNG
and prints Dice against the sample's reference labels; with a display it opens napari with the
plugin docked and the sample loaded.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from ..core import checks
from .common import arg

ORGANS = ("liver", "spleen", "kidney_right", "kidney_left", "stomach", "aorta")


def register(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="segment the bundled sample CT (or open napari on it)",
        description="Segment organs of the bundled TotalSegmentator sample CT from "
        "boxes, print Dice against its reference labels and write an overlay PNG. "
        "With a display (and napari installed) it opens napari instead, unless "
        "--headless is given.",
    )
    p.add_argument("--headless", action="store_true", help="never open a window")
    p.add_argument("-o", "--output", default="out/demo_overlay.png", help="overlay PNG to write")
    p.add_argument("--device", default=None, type=arg(checks.device_name), help="cpu or cuda")
    p.set_defaults(func=run)


def has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def run(args: argparse.Namespace) -> int:
    if not args.headless and has_display():
        try:
            from ..annotator.launch import launch
        except ImportError:
            print(
                "napari is not installed (pip install 'napari-medsam[napari]'); running headless."
            )
        else:
            launch()
            return 0
    checks.output_file(args.output, (".png",), "overlay")  # before the segmentation
    return run_headless(args.output, args.device)


def run_headless(output: str, device: str | None = None) -> int:
    from ..core.metrics import bbox, dice
    from ..core.runtime import RuntimeSpec, build_predictor, default_cache
    from ..core.session import Session
    from ..core.volume import read_volume
    from ..sample import sample_ct_path, sample_label_names, sample_labels_path

    ct = read_volume(sample_ct_path())  # axial slices, shown the radiological way (as napari)
    ref = ct.labels_from_file(sample_labels_path())
    names = {v: k for k, v in sample_label_names().items()}
    predictor = build_predictor(RuntimeSpec(device=device), default_cache())
    session = Session(predictor, preset="ct-soft-tissue")
    session.set_image(ct.data, is_volume=True)
    present = set(np.unique(ref).tolist())
    organs = [(o, names[o]) for o in ORGANS if names.get(o) in present]
    areas = [(ref == i).sum(axis=(1, 2)) for _, i in organs]
    z = int(np.argmax(np.sum([a > 0 for a in areas], axis=0) * 1e6 + np.sum(areas, axis=0)))
    session.set_slice(z)
    print(f"LiteMedSAM on the sample CT ({ct.describe()}), slice {z}:")
    results = []
    for organ, oid in organs:
        truth = ref[z] == oid
        if truth.sum() < 20:
            continue
        mask = session.set_box(bbox(truth, 5))
        results.append(dice(mask, truth))
        session.commit()
        print(f"  {organ:<14} Dice vs reference labels {results[-1]:.3f}")
    print(
        f"mean Dice {np.mean(results):.3f} over {len(results)} organs "
        "(reference = TotalSegmentator model output, a silver standard)"
    )
    path = write_overlay(
        output, session.preset.apply(ct.data[z], session.bounds), session.labels[z]
    )
    print(f"overlay written to {path}")
    return 0


def write_overlay(path: str, image01: np.ndarray, labels: np.ndarray) -> str:
    """Gray image with coloured, half-transparent labels, upscaled 4x, as a PNG."""
    from PIL import Image

    from ..core.atomic import atomic_write_path

    rgb = np.repeat((image01 * 255).astype(np.uint8)[..., None], 3, axis=2).astype(float)
    rng = np.random.default_rng(7)
    for lab in np.unique(labels)[1:]:
        colour = rng.integers(60, 256, 3)
        rgb[labels == lab] = 0.5 * rgb[labels == lab] + 0.5 * colour
    img = Image.fromarray(rgb.astype(np.uint8)).resize(
        (labels.shape[1] * 4, labels.shape[0] * 4), Image.NEAREST
    )
    atomic_write_path(path, lambda tmp: img.save(tmp, format="PNG"))
    return str(path)
