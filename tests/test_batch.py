"""`napari-medsam batch` on a 2-worker LocalCluster over dev images and a dev volume: outputs equal
the single-process CLI's bit for bit, resume skips finished items, a task whose worker is killed
completes on the other worker, a corrupt item is reported while the others finish, Ctrl-C stops
cleanly, and concurrent writers of one cache key leave one valid file."""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_medsam.cli import main
from napari_medsam.core.batch import Item, Ledger, TaskOptions, content_key, discover, run_batch
from napari_medsam.core.batch.tasks import run_item
from napari_medsam.core.embeddings import Embedding, EmbeddingCache
from napari_medsam.core.runtime import RuntimeSpec
from napari_medsam.sample import sample_ct_path

distributed = pytest.importorskip("distributed")
REPO = Path(__file__).resolve().parents[1]
TORCH = ["--profile", "torch", "--no-progress"]  # the fastest start (no ONNX export) in tests


@pytest.fixture(scope="module")
def cluster():
    """Two single-threaded worker processes, shared by the tests of this file."""
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers run our wrappers
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as local:
        yield local


def run_cli(*runs: list[str]) -> None:
    """Run the plain CLI (`main(argv)` for each run) in one fresh process started with one
    thread, as every worker is: reductions split over threads round differently (~1e-6), so
    bit-equality holds at the same thread count."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "NAPARI_MEDSAM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    code = ("import json, sys\nfrom napari_medsam.cli import main\n"
            "sys.exit(max(main(argv) for argv in json.loads(sys.argv[1])))")
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", code, json.dumps(runs)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, data_dir, manifest) -> Path:
    """Two PH2 photos, a 2-slice cut of the sample CT and a corrupt 'PNG' in a folder tree."""
    root = tmp_path_factory.mktemp("inputs")
    (root / "ph2").mkdir()
    for pair in [p for p in manifest if p["dataset"] == "ph2"][:2]:
        shutil.copy(data_dir / pair["image"], root / "ph2" / Path(pair["image"]).name)
    (root / "ct").mkdir()
    nib.save(nib.load(sample_ct_path()).slicer[:, :, 13:15], root / "ct" / "ct2.nii.gz")
    (root / "bad.png").write_text("not an image")
    return root


def good(inputs: Path) -> list[Path]:
    return sorted(p for p in inputs.rglob("*") if p.is_file() and p.name != "bad.png")


@pytest.fixture(scope="module")
def auto_run(cluster, inputs, tmp_path_factory):
    """`batch auto` over the tree, and `auto` (the plain CLI) on each good input."""
    tmp = tmp_path_factory.mktemp("auto")
    out, cache = tmp / "out", tmp / "cache"
    args = ["batch", "auto", str(inputs), "--head", "ph2-patch", "-o", str(out),
            "--cache-dir", str(cache), "--scheduler", cluster.scheduler_address, *TORCH]
    code = main(args)
    run_cli(*(["auto", str(path), "--head", "ph2-patch", "-o", str(tmp / "cli" / path.name),
           "--cache-dir", str(tmp / "cli-cache"), "--profile", "torch"] for path in good(inputs)))
    return {"code": code, "out": out, "cache": cache, "tmp": tmp, "args": args}


def entries(out: Path) -> dict[str, dict]:
    return {e["item"]["rel"]: e for e in (json.loads(p.read_text())
                                         for p in (out / "ledger").glob("*.json"))}


def npz_arrays(folder: Path) -> dict[str, np.ndarray]:
    out = {}
    for file in sorted(folder.rglob("*.npz")):
        with np.load(file) as data:
            out[file.name] = data["features"]
    return out


@pytest.mark.slow
def test_auto_equals_cli_and_corrupt_item_is_reported(auto_run, inputs):
    out, tmp = auto_run["out"], auto_run["tmp"]
    assert auto_run["code"] == 2  # one item failed, the batch went on
    ledger = entries(out)
    assert ledger["bad.png"]["status"] == "failed"
    assert "not a readable image" in ledger["bad.png"]["error"]
    for path in good(inputs):
        rel = path.relative_to(inputs).as_posix()
        assert ledger[rel]["status"] == "done", ledger[rel]
        written = Path(ledger[rel]["outputs"][0])
        assert written == out / "labels" / rel  # the tree mirrored, .png / .nii.gz kept
        assert written.read_bytes() == (tmp / "cli" / path.name).read_bytes()  # bit for bit
    ct = nib.load(out / "labels" / "ct" / "ct2.nii.gz")
    np.testing.assert_array_equal(ct.affine, nib.load(inputs / "ct" / "ct2.nii.gz").affine)
    assert np.asarray(ct.dataobj).any()
    batch_cache, cli_cache = npz_arrays(auto_run["cache"]), npz_arrays(tmp / "cli-cache")
    assert batch_cache.keys() == cli_cache.keys() and len(batch_cache) == 4  # 2 photos, 2 slices
    for name, features in batch_cache.items():
        np.testing.assert_array_equal(features, cli_cache[name])


@pytest.mark.slow
def test_resume_skips_finished_items(auto_run, capsys):
    out = auto_run["out"]
    stamps = {p: p.stat().st_mtime_ns for p in (out / "labels").rglob("*.*")}
    capsys.readouterr()
    assert main(auto_run["args"]) == 2  # the corrupt item is tried again, and fails again
    printed = capsys.readouterr().out
    assert "skipped         3" in printed and "failed          1" in printed
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing rewritten


@pytest.mark.slow
def test_embed_equals_cli_cache(auto_run, inputs, cluster, tmp_path, capsys):
    cache = tmp_path / "cache"
    assert main(["batch", "embed", str(inputs), "-o", str(tmp_path / "out"), "--cache-dir",
                 str(cache), "--glob", "ph2/*", "--scheduler", cluster.scheduler_address,
                 *TORCH]) == 0  # the photos: the volume's slices are compared above
    ledger = entries(tmp_path / "out")
    assert sum(e["computed"] for e in ledger.values()) == 2
    assert all(Path(f).is_file() for e in ledger.values() for f in e["outputs"])
    cli_cache = auto_run["tmp"] / "cli-cache"  # filled by the CLI's `auto` runs
    capsys.readouterr()
    assert main(["embed", str(good(inputs)[-1]), "--cache-dir", str(cache), "--profile",
                 "torch"]) == 0
    assert "0 computed" in capsys.readouterr().out  # the CLI finds the batch's entry
    batch, cli = npz_arrays(cache), npz_arrays(cli_cache)
    assert len(batch) == 2 and batch.keys() <= cli.keys()
    for name, features in batch.items():
        np.testing.assert_array_equal(features, cli[name])


@pytest.mark.slow
def test_eval_records_equal_cli(data_dir, cluster, tmp_path):
    pick = ["--datasets", "ph2", "--max-cases", "2"]
    run_cli(["eval", str(data_dir), *pick, "--json", str(tmp_path / "cli.json"),
             "--cache-dir", str(tmp_path / "c1"), "--profile", "torch"])
    assert main(["batch", "eval", str(data_dir), *pick, "-o", str(tmp_path / "out"),
                 "--cache-dir", str(tmp_path / "c2"), "--scheduler", cluster.scheduler_address,
                 *TORCH]) == 0
    cli = (tmp_path / "cli.json").read_text()
    assert (tmp_path / "out" / "records.json").read_text() == cli
    assert len(json.loads(cli)) == 2


def crash_once(item: Item, key: str, options: TaskOptions, marker: str, victim: str) -> dict:
    """Kill this worker process the first time `victim` runs (its pid left in `marker`)."""
    if item.rel == victim and not os.path.exists(marker):
        Path(marker).write_text(str(os.getpid()))
        os._exit(1)
    return run_item(item, key, options)


def photo_items(inputs: Path) -> list[Item]:
    return [Item(str(p), p.relative_to(inputs).as_posix()) for p in good(inputs)
            if p.suffix == ".png"]


@pytest.mark.slow
def test_killed_worker_task_completes_on_another_worker(cluster, inputs, auto_run, tmp_path):
    items = photo_items(inputs)
    marker = tmp_path / "killed"
    options = TaskOptions("embed", str(tmp_path / "out"), RuntimeSpec(profile="torch"),
                          cache_dir=str(auto_run["cache"]), threads=1)
    task = functools.partial(crash_once, marker=str(marker), victim=items[0].rel)
    with distributed.Client(cluster) as client:
        summary = run_batch(client, items, options, retries=2, progress=False, task=task)
    assert marker.is_file()  # the victim's first worker died mid-task
    assert summary.counts["done"] == 2 and not summary.failed
    victim = next(e for e in summary.entries if e["item"]["rel"] == items[0].rel)
    assert victim["pid"] != int(marker.read_text())  # ran again in another worker process


def sleepy(item: Item, key: str, options: TaskOptions) -> dict:
    import time

    time.sleep(2.0)
    return {"key": key, "item": {"rel": item.rel}, "status": "done", "seconds": 2.0}


@pytest.mark.slow
def test_ctrl_c_cancels_pending_items(cluster, inputs, tmp_path):
    items = [Item(str(p), f"{i}-{p.name}") for i, p in enumerate(good(inputs) * 4)]
    options = TaskOptions("embed", str(tmp_path / "out"), RuntimeSpec(profile="torch"),
                          cache_dir=str(tmp_path / "cache"), threads=1)
    # the signal goes to the main thread, where Python handles it: sent to the process, the
    # kernel may hand it to a native library's thread (OpenVINO, torch, dask) mid-call
    timer = threading.Timer(6.0, signal.pthread_kill,
                            (threading.main_thread().ident, signal.SIGINT))
    # Ctrl-C as a terminal gives it: Python's own SIGINT handler, whatever a library set before
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    with distributed.Client(cluster) as client:
        timer.start()
        try:
            summary = run_batch(client, items, options, progress=False, task=sleepy)
        finally:
            timer.cancel()
            signal.signal(signal.SIGINT, previous)
        assert client.submit(sum, [1, 2], pure=False).result() == 3  # the cluster still works
    assert summary.interrupted and not summary.ok
    assert summary.counts["cancelled"] > 0
    assert summary.counts["done"] + summary.counts["cancelled"] == len(items)


def _writer(folder: str, key: str, value: int, rounds: int) -> None:
    cache = EmbeddingCache(disk_dir=folder)
    features = np.full((256, 64, 64), value, np.float32)
    for _ in range(rounds):
        cache.put(key, Embedding(features, (100, 120), (1024, 1024)))
        cache.clear_memory()
        entry = cache.get(key)  # another writer may have replaced it: any whole one is fine
        assert entry is not None and len(np.unique(entry.features)) == 1


def test_concurrent_writers_of_one_key_leave_one_valid_file(tmp_path):
    key = "ab" + "0" * 38
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), key, v, 10)) for v in range(1, 5)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * len(procs)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert [f.name for f in files] == [f"{key}.npz"]  # no temporary file left behind
    entry = EmbeddingCache(disk_dir=tmp_path).get(key)
    values = np.unique(entry.features)
    assert len(values) == 1 and int(values[0]) in range(1, 5)  # one writer's whole entry


def test_discover_tree_list_manifest_and_dicom(tmp_path, data_dir):
    root = tmp_path / "tree"
    (root / "a").mkdir(parents=True)
    (root / "series").mkdir()
    (root / ".hidden").mkdir()
    for name in ("a/x.png", "a/y.nii.gz", "a/x.medsam-ph2-patch.png", ".hidden/z.png",
                 "a/notes.txt"):
        (root / name).write_bytes(b"")
    for z in range(2):  # the DICOM preamble is what marks a series folder
        (root / "series" / f"{z}.dcm").write_bytes(b"\0" * 128 + b"DICM" + bytes(8))
    (root / "out").mkdir()
    (root / "out" / "w.png").write_bytes(b"")
    found = discover(root, exclude=root / "out")
    assert [it.rel for it in found] == ["a/x.png", "a/y.nii.gz", "series"]
    assert discover(root / "series")[0].is_dicom_folder
    assert [it.rel for it in discover(root, pattern="a/*", exclude=root / "out")] == \
        ["a/x.png", "a/y.nii.gz"]
    listing = tmp_path / "list.txt"
    listing.write_text("# two inputs\ntree/a/x.png\n\n" + str(root / "series") + "\n")
    assert [it.rel for it in discover(listing)] == ["a/x.png", "series"]
    pairs = discover(data_dir, datasets=["ph2", "camus"], max_cases=2)
    assert sorted(it.dataset for it in pairs) == ["camus", "camus", "ph2", "ph2"]
    assert all(it.mask and Path(it.mask).is_file() for it in pairs)


def test_content_key_follows_bytes_and_options(tmp_path):
    image = tmp_path / "x.png"
    image.write_bytes(b"one")
    item = Item(str(image), "x.png")
    first = content_key(item, {"task": "embed"})
    assert content_key(Item(str(image), "elsewhere.png"), {"task": "embed"}) == first
    assert content_key(item, {"task": "auto"}) != first
    image.write_bytes(b"two")
    assert content_key(item, {"task": "embed"}) != first


def test_ledger_needs_outputs_present(tmp_path):
    ledger = Ledger(tmp_path)
    made = tmp_path / "labels.png"
    made.write_bytes(b"x")
    ledger.write({"key": "k1", "status": "done", "outputs": [str(made)]})
    assert ledger.finished("k1") is not None
    made.unlink()
    assert ledger.finished("k1") is None  # a deleted output is made again
    ledger.path("k2").write_text("{half")
    assert ledger.get("k2") is None
