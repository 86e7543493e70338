"""napari widget: preview latency per click and per box, from a cached embedding.

Times a click / box added to the widget's prompt layers until the preview layer is updated and
the Qt events are processed (what the user waits for), against the core decode alone
(`Session.add_point` on the same embedding) measured in the same process. "click cpu" is the
CPU time of the UI thread per click: with --threads 1 it estimates the latency on an idle core
even when the machine is shared (wall times then include waiting for other processes).

A second table times a first click on small objects (LIDC nodules of the dev set), whose
zoom window is not encoded yet: the widget shows the whole-image mask at once and the zoomed one
when the window's encoder run (in a worker) ends, against a click that waits for the encoder
(`Session.add_point` without `defer_zoom`, on its own cache) in the same process.

`--profile` picks what decodes (torch, or an ONNX Runtime profile: accurate, balanced, fast), as
the dock's Profile box does.

Run (needs a display; headless: xvfb-run -a): python benchmarks/bench_widget.py [--threads T]
    [--nodules N] [--profile P]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from napari_medsam.core.io import read_image  # noqa: E402
from napari_medsam.core.metrics import bbox  # noqa: E402
from napari_medsam.core.profiles import ORDER  # noqa: E402
from napari_medsam.core.runtime import RuntimeSpec, load_torch  # noqa: E402

DATA = REPO.parent / "shared" / "data"
CASES = [("CAMUS echo 224x224 gray", "echo/camus/images/patient0027_2CH_ED.png"),
         ("PH2 dermoscopy 765x572 RGB", "dermoscopy/ph2/images/IMD002.png")]


def cases() -> list[tuple[str, np.ndarray, np.ndarray]]:
    out = []
    for name, rel in CASES:
        if (DATA / rel).is_file():
            truth = np.asarray(read_image(DATA / rel.replace("/images/", "/masks/")).data) > 0
            out.append((name, read_image(DATA / rel).data, truth))
    from napari_medsam.sample import sample_ct_path, sample_labels_path

    ct, ref = read_image(sample_ct_path()).data, np.asarray(read_image(sample_labels_path()).data)
    out.append(("sample CT slice 122x101 (HU)", ct, ref == 5))  # 5 = liver
    return out


def small_objects(widget, viewer, n: int) -> None:
    """First clicks on `n` LIDC nodules: waiting for the window vs preview now, zoom later."""
    from qtpy.QtWidgets import QApplication

    from napari_medsam.core.clicks import next_click
    from napari_medsam.core.embeddings import EmbeddingCache
    from napari_medsam.core.evaluation import load_manifest
    from napari_medsam.core.metrics import dice
    from napari_medsam.core.predictor import Predictor
    from napari_medsam.core.session import Session

    pairs = [p for p in load_manifest(DATA) if p["dataset"] == "lidc"][:n] \
        if (DATA / "manifest.json").is_file() else []
    if not pairs:
        return
    rows = []
    for k, pair in enumerate(pairs):
        image = read_image(DATA / pair["image"]).data
        truth = np.asarray(read_image(DATA / pair["mask"]).data) > 0
        layer = viewer.add_image(image, name=f"nodule {k}")
        ann = widget.current
        widget.compute_embeddings(all_slices=False)
        widget.wait()
        click = next_click(truth)
        waiting = Session(Predictor(backend=ann.session.predictor.backend, cache=EmbeddingCache(),
                                    zoom=True), preset=ann.preset)
        waiting.set_image(image)
        waiting.embed()
        t = time.perf_counter()
        want = waiting.add_point(click.x, click.y, True)
        wait_ms = (time.perf_counter() - t) * 1000
        t = time.perf_counter()
        ann.points.add([click.y, click.x])
        QApplication.processEvents()
        shown_ms = (time.perf_counter() - t) * 1000
        shown = ann.preview.data.astype(bool)
        ann.wait_zoom()
        zoomed_ms = (time.perf_counter() - t) * 1000
        zoomed = ann.preview.data.astype(bool)
        rows.append((wait_ms, shown_ms, zoomed_ms, dice(shown, truth), dice(zoomed, truth),
                     float(np.array_equal(zoomed, want))))
        widget.clear()
        viewer.layers.remove(layer)
    table = np.array(rows)
    (w, c, z), (d0, d1, same) = np.median(table[:, :3], axis=0), table[:, 3:].mean(axis=0)
    print(f"\nfirst click on {len(rows)} LIDC nodules, zoom window not encoded (median ms; "
          "mean Dice)")
    print(f"{'waiting click ms':>17} {'preview ms':>11} {'zoomed ms':>10} {'ratio':>6} "
          f"{'Dice preview':>13} {'Dice zoomed':>12} {'same as waiting':>16}")
    print(f"{w:>17.1f} {c:>11.1f} {z:>10.1f} {w / c:>6.1f} {d0:>13.3f} {d1:>12.3f} "
          f"{same:>16.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--nodules", type=int, default=6, help="small-object clicks (0: none)")
    ap.add_argument("--profile", default="torch", choices=("torch", *ORDER),
                    help="what decodes: torch, or an ONNX Runtime profile")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_medsam.annotator.engine import Engine
    from napari_medsam.annotator.geometry import rect
    from napari_medsam.annotator.widget import MedSAMWidget

    model = load_torch(RuntimeSpec(device="cpu"))
    viewer = napari.Viewer(show=False)
    widget = MedSAMWidget(viewer, engine=Engine(cache_dir=tempfile.mkdtemp()))
    widget.model.device_combo.setCurrentText("cpu")
    widget.model.profile_combo.setCurrentText(args.profile)
    widget.engine.use(model, widget.spec())
    print(f"torch threads {torch.get_num_threads()}; median of {args.repeats} prompts")
    print(f"{'image':<30} {'decode ms':>10} {'click ms':>9} {'ratio':>6} {'box ms':>7} "
          f"{'click cpu ms':>13}")
    described = False
    for name, image, truth in cases():
        is_volume = image.ndim == 3 and image.shape[-1] != 3
        layer = viewer.add_image(image, name=name, rgb=image.ndim == 3 and not is_volume)
        ann = widget.current
        z = int(np.argmax(truth.sum(axis=(1, 2)))) if is_volume else None
        if is_volume:
            viewer.dims.set_current_step(0, z)
        truth2d = truth[z] if is_volume else truth
        widget.compute_embeddings(all_slices=False)
        widget.wait()
        if not described:
            print(f"decoding with {ann.session.predictor.backend.describe()}")
            described = True
        ys, xs = np.nonzero(truth2d)
        rng = np.random.default_rng(0)
        picks = rng.integers(0, len(ys), args.repeats)

        decode = []
        ann.session.reset_prompts()
        for i in picks:
            t = time.perf_counter()
            ann.session.add_point(xs[i], ys[i], True)
            decode.append((time.perf_counter() - t) * 1000)
        ann.session.reset_prompts()

        click, box, cpu = [], [], []
        for i in picks:
            point = [ys[i], xs[i]] if z is None else [z, ys[i], xs[i]]
            t, c = time.perf_counter(), time.thread_time()
            ann.points.add(point)
            QApplication.processEvents()
            click.append((time.perf_counter() - t) * 1000)
            cpu.append((time.thread_time() - c) * 1000)
        widget.clear()
        for _ in range(args.repeats):
            t = time.perf_counter()
            ann.boxes.add_rectangles([rect(bbox(truth2d, int(rng.integers(2, 8))), z)])
            QApplication.processEvents()
            box.append((time.perf_counter() - t) * 1000)
        widget.clear()
        d, c, b, u = (statistics.median(v) for v in (decode, click, box, cpu))
        print(f"{name:<30} {d:>10.1f} {c:>9.1f} {c / d:>6.2f} {b:>7.1f} {u:>13.1f}")
        viewer.layers.remove(layer)
    small_objects(widget, viewer, args.nodules)
    viewer.close()


if __name__ == "__main__":
    main()
