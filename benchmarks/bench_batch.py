"""Batch throughput: items per minute of `batch embed` on a LocalCluster of 1 and of 2 workers
(1 thread each), against the plain single-process CLI and the bare per-item work.

Every run embeds the same dev images into an empty cache:
  * loop:    the batch's per-item function in this process, the model loaded once (no dask):
             the work itself.
  * cli:     `napari-medsam embed IMAGE` once per image, a fresh process each (what a shell
             loop does: Python start and model load per image).
  * batch-1: `batch embed` on a LocalCluster of 1 worker; batch-2: of 2 workers (wall time
             including the cluster's start; "steady" counts from the first finished item).
All with one thread per process (OMP_NUM_THREADS=1), so the CPUs, not threads, are what grows.
Besides wall time, the CPU seconds each run spent (this process, its CLI children, the workers
from their start to the end: imports, model load, tasks) are measured: on a shared machine the
wall time says how busy it was, the CPU time what the batch costs, and 60 * cores / (CPU s per
item) the throughput the cores would give when free.

    python benchmarks/bench_batch.py [--items 10] [--profile accurate] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("NAPARI_MEDSAM_DATA", REPO.parent / "shared" / "data"))
os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", NAPARI_MEDSAM_THREADS="1")

from napari_medsam.core.batch import (  # noqa: E402
    Item,
    TaskOptions,
    content_key,
    open_client,
    run_batch,
)
from napari_medsam.core.batch.tasks import run_item  # noqa: E402
from napari_medsam.core.runtime import RuntimeSpec  # noqa: E402


def dev_items(n: int) -> list[Item]:
    """The first n CAMUS echo frames of the dev manifest (same size class, one slice each)."""
    pairs = json.loads((DATA / "manifest.json").read_text())["pairs"]
    chosen = [p for p in pairs if p["dataset"] == "camus"][:n]
    return [Item(str(DATA / p["image"]), p["image"]) for p in chosen]


def options(tmp: Path, name: str, profile: str) -> TaskOptions:
    return TaskOptions("embed", str(tmp / name / "out"), RuntimeSpec(profile=profile),
                       cache_dir=str(tmp / name / "cache"), threads=1)


def run_loop(items: list[Item], opts: TaskOptions) -> dict:
    run_item(items[0], "warm-up", replace_cache(opts, "warm"))  # model load, not timed
    start, cpu = time.perf_counter(), time.process_time()
    for item in items:
        entry = run_item(item, content_key(item, opts.key_options()), opts)
        assert entry["status"] == "done", entry
    return {"wall": time.perf_counter() - start, "cpu": time.process_time() - cpu}


def replace_cache(opts: TaskOptions, name: str) -> TaskOptions:
    from dataclasses import replace

    return replace(opts, cache_dir=str(Path(opts.cache_dir).parent / name),
                   output=str(Path(opts.output).parent / name))


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_cli(items: list[Item], cache: Path, profile: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start, cpu = time.perf_counter(), children_cpu()
    for item in items:
        subprocess.run([sys.executable, "-W", "ignore", "-m", "napari_medsam.cli", "embed",
                        item.path, "--profile", profile, "--cache-dir", str(cache)],
                       env=env, check=True, capture_output=True)
    return {"wall": time.perf_counter() - start, "cpu": children_cpu() - cpu}


def worker_cpu() -> float:
    """CPU seconds of this worker process since it started (run on each worker)."""
    import psutil

    times = psutil.Process().cpu_times()
    return times.user + times.system


def run_cluster(items: list[Item], opts: TaskOptions, workers: int) -> dict:
    start, cpu = time.perf_counter(), time.process_time()
    with open_client(None, workers, 1) as client:
        up = time.perf_counter() - start
        summary = run_batch(client, items, opts, progress=False)
        workers_cpu = sum(client.run(worker_cpu).values())
    wall = time.perf_counter() - start
    assert summary.counts["done"] == len(items), summary.table()
    seconds = [e["seconds"] for e in summary.entries]
    task_cpu = [e["cpu_seconds"] for e in summary.entries]
    return {"wall": wall, "cluster_start": up, "batch_wall": summary.wall,
            "task_mean": sum(seconds) / len(seconds), "task_cpu_mean": sum(task_cpu) / len(
                task_cpu), "cpu": time.process_time() - cpu + workers_cpu,
            "client_cpu": time.process_time() - cpu,
            "fixed_cpu": time.process_time() - cpu + workers_cpu - sum(task_cpu)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--items", type=int, default=10)
    ap.add_argument("--profile", default="accurate",
                    help="accurate (ONNX fp32, default) or torch; 'auto' measures first")
    ap.add_argument("--json", default=None, help="write the numbers here")
    args = ap.parse_args()
    items = dev_items(args.items)
    n = len(items)
    results = {"items": n, "profile": args.profile, "load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        results["loop"] = run_loop(items, options(tmp, "loop", args.profile))
        results["cli"] = run_cli(items, tmp / "cli-cache", args.profile)
        results["batch-1"] = run_cluster(items, options(tmp, "b1", args.profile), 1)
        results["batch-2"] = run_cluster(items, options(tmp, "b2", args.profile), 2)
    results["load_after"] = os.getloadavg()
    print(f"{n} CAMUS images, embed, profile {args.profile}, 1 thread per process, "
          f"load average before {results['load_before'][0]:.1f}, "
          f"after {results['load_after'][0]:.1f}")
    cores = 2
    print(f"{'run':<10}{'wall s':>9}{'s/item':>9}{'items/min':>11}{'CPU s/item':>12}"
          f"{'items/min, 2 free cores':>25}")
    for name in ("loop", "cli", "batch-1", "batch-2"):
        r = results[name]
        r["items_per_min"] = 60 * n / r["wall"]
        r["cpu_per_item"] = r["cpu"] / n
        parallel = cores if name == "batch-2" else 1
        r["items_per_min_free"] = 60 * parallel / r["cpu_per_item"]
        print(f"{name:<10}{r['wall']:>9.1f}{r['wall'] / n:>9.2f}{r['items_per_min']:>11.1f}"
              f"{r['cpu_per_item']:>12.2f}{r['items_per_min_free']:>25.1f}")
    b1, b2 = results["batch-1"], results["batch-2"]
    results["ratio_2_vs_1"] = b1["wall"] / b2["wall"]
    results["ratio_2_vs_1_steady"] = (b1["wall"] - b1["cluster_start"]) / \
        (b2["wall"] - b2["cluster_start"])
    loop = results["loop"]["wall"] / n
    results["overhead_per_item_vs_loop"] = b1["batch_wall"] / n - loop
    results["overhead_per_item_vs_cli"] = b1["wall"] / n - results["cli"]["wall"] / n
    print(f"2 workers vs 1: {results['ratio_2_vs_1']:.2f}x (wall), "
          f"{results['ratio_2_vs_1_steady']:.2f}x without the cluster start "
          f"({b1['cluster_start']:.1f} s / {b2['cluster_start']:.1f} s)")
    results["cpu_overhead_per_item_vs_loop"] = b1["cpu_per_item"] - results["loop"]["cpu_per_item"]
    results["cpu_overhead_per_item_vs_cli"] = b1["cpu_per_item"] - results["cli"]["cpu_per_item"]
    print(f"batch-1 per item vs the bare loop: {results['overhead_per_item_vs_loop']:+.2f} s "
          f"wall, {results['cpu_overhead_per_item_vs_loop']:+.2f} s CPU (task mean "
          f"{b1['task_mean']:.2f} s wall, {b1['task_cpu_mean']:.2f} s CPU in the worker)")
    print(f"batch-1 per item vs the plain CLI: {results['overhead_per_item_vs_cli']:+.2f} s "
          f"wall, {results['cpu_overhead_per_item_vs_cli']:+.2f} s CPU")
    for name in ("batch-1", "batch-2"):
        r = results[name]
        print(f"{name}: CPU outside the items (cluster, worker start, model load, client) "
              f"{r['fixed_cpu']:.1f} s; in the items {r['task_cpu_mean']:.2f} s each")
    if args.json:
        from napari_medsam.core.atomic import atomic_text

        atomic_text(args.json, json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
