"""`napari-medsam batch {embed,auto,eval} SOURCE -o OUT`: a whole archive on dask (docs/batch.md).

A LocalCluster sized to this machine unless --scheduler names a running cluster; resumable (a
re-run skips finished items), a failing item is recorded and the batch goes on.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .auto import _shipped
from .common import add_model_options, add_plane_option, spec_from_args

TASK_HELP = {
    "embed": "fill the embedding cache (a folder every worker reaches) with every slice",
    "auto": "label maps of every structure from a trained head, one per image / volume",
    "eval": "Dice records against the ground truth of a manifest, merged as `eval --json`",
}


def register(sub) -> None:
    p = sub.add_parser("batch", help="embed, auto-segment or evaluate a whole archive on dask "
                       "(a local cluster by default)",
                       description="Run one task per image / volume over a folder tree, a list "
                       "file (one path a line), DICOM series folders or a manifest (a folder "
                       "with manifest.json), on a dask LocalCluster sized to this machine or on "
                       "a running cluster (--scheduler). Finished items are skipped on a re-run; "
                       "a failing item is recorded and the batch goes on (exit code 2 at the "
                       "end). See docs/batch.md.")
    tasks = p.add_subparsers(dest="task", metavar="TASK", required=True)
    for name, text in TASK_HELP.items():
        t = tasks.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        t.add_argument("source", help="a folder (every image, NIfTI and DICOM series below it), "
                       "a folder with manifest.json or the manifest, a list file (.txt), or "
                       "one DICOM series folder")
        t.add_argument("-o", "--output", required=True,
                       help="batch folder: the ledger (what is done), label maps under labels/, "
                            "eval records")
        if name == "auto":
            t.add_argument("--head", required=True,
                           help=f"a shipped head ({', '.join(_shipped()) or 'none installed'}) "
                                "or the folder of a head made with train-head")
            t.add_argument("--mode", default=None, choices=["dense", "box", "refine"],
                           help="how the head prompts the model (default: the head's choice)")
            t.add_argument("--beside", action="store_true",
                           help="write each label map next to its input as "
                                "NAME.medsam-HEAD.png / .nii.gz instead of under OUTPUT/labels")
        if name == "eval":
            t.add_argument("--prompt", default="box", choices=["box", "clicks", "box+clicks"],
                           help="prompt kind to simulate, as `eval` (default box)")
            t.add_argument("--max-clicks", type=int, default=20,
                           help="click cap for NoC, as `eval` (default 20)")
            t.add_argument("--max-slices", type=int, default=None,
                           help="at most N slices per label in a volume (evenly spread)")
            t.add_argument("--json", default=None,
                           help="merged records file (default OUTPUT/records.json)")
        else:
            add_plane_option(t)
        _add_batch_options(t)
        add_model_options(t)
        t.set_defaults(func=run)


def _add_batch_options(t: argparse.ArgumentParser) -> None:
    t.add_argument("--scheduler", default=None,
                   help="address of a running dask scheduler (e.g. tcp://10.0.0.5:8786; see "
                        "docs/batch.md for SLURM); default: a LocalCluster on this machine")
    t.add_argument("--workers", type=int, default=None,
                   help="LocalCluster worker processes (default: one per usable CPU core)")
    t.add_argument("--threads-per-worker", type=int, default=1,
                   help="CPU threads of each LocalCluster worker, given to torch / ONNX "
                        "Runtime (default 1)")
    t.add_argument("--retries", type=int, default=3,
                   help="times an item runs again on another worker when its worker dies "
                        "(LocalCluster; a running cluster keeps its own "
                        "distributed.scheduler.allowed-failures) (default 3)")
    t.add_argument("--force", action="store_true",
                   help="run every item again, even those a previous run finished")
    t.add_argument("--glob", default=None,
                   help="only items whose path under SOURCE matches, e.g. '*/images/*'")
    t.add_argument("--datasets", default=None,
                   help="manifests: comma-separated dataset names (default all)")
    t.add_argument("--max-cases", type=int, default=None,
                   help="manifests: at most N cases per dataset")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")


def options_from_args(args: argparse.Namespace):
    """The `TaskOptions` the arguments describe (paths made absolute: workers may start in
    another folder)."""
    from ..core.batch import TaskOptions
    from ..core.embeddings import default_cache_dir

    head = getattr(args, "head", None)
    if head and Path(head).expanduser().is_dir():
        head = os.path.abspath(Path(head).expanduser())
    cache_dir = args.cache_dir or default_cache_dir() / "embeddings"
    return TaskOptions(
        task=args.task, output=os.path.abspath(Path(args.output).expanduser()),
        spec=spec_from_args(args), preset=args.preset, plane=getattr(args, "plane", "axial"),
        cache_dir=os.path.abspath(Path(cache_dir).expanduser()),
        disk_cache=not args.no_disk_cache, head=head, mode=getattr(args, "mode", None),
        beside=getattr(args, "beside", False), prompt=getattr(args, "prompt", "box"),
        max_clicks=getattr(args, "max_clicks", 20), max_slices=getattr(args, "max_slices", None),
        threads=None if args.scheduler else args.threads_per_worker,
    )


def run(args: argparse.Namespace) -> int:
    from ..core.batch import discover, open_client, run_batch

    options = options_from_args(args)
    source = os.path.abspath(Path(args.source).expanduser())
    items = discover(source, exclude=options.output, pattern=args.glob,
                     datasets=args.datasets.split(",") if args.datasets else None,
                     max_cases=args.max_cases)
    if args.task == "eval" and not all(item.pair for item in items):
        from ..core.errors import InputError

        raise InputError(f"batch eval needs ground truth: give a folder with manifest.json "
                         f"(or the manifest), not {args.source}.")
    where = args.scheduler or (f"a local cluster of {args.workers or 'one per core'} worker(s) "
                               f"x {args.threads_per_worker} thread(s)")
    print(f"batch {args.task}: {len(items)} item(s) from {source} on {where}; "
          f"ledger in {Path(options.output) / 'ledger'}")
    with open_client(args.scheduler, args.workers, args.threads_per_worker,
                     args.retries) as client:
        summary = run_batch(client, items, options, retries=args.retries,
                            progress=not args.no_progress, force=args.force)
    print(summary.table())
    if args.task == "eval":
        _report_records(summary.records(), args, options)
    elif args.task == "embed":
        print(f"embeddings in {options.cache_dir}")
    if summary.interrupted:
        print("cancelled: finished items are kept; run the same command to resume",
              file=sys.stderr)
        return 130
    if not summary.ok:
        print(f"error: {summary.counts['failed']} of {len(items)} item(s) failed (listed above; "
              f"details in the ledger). Fix them and run the same command: finished items are "
              "skipped.", file=sys.stderr)
        return 2
    return 0


def _report_records(records: list[dict], args: argparse.Namespace, options) -> None:
    """Print the eval summary and write the merged records (`eval --json`'s content)."""
    import json

    from ..core.atomic import atomic_text
    from ..core.click_eval import format_click_summary
    from ..core.evaluation import format_summary

    if records:
        print(format_summary(records) if args.prompt == "box" else format_click_summary(records))
    path = Path(args.json or Path(options.output) / "records.json")
    atomic_text(path, json.dumps(records, indent=1))
    print(f"wrote {len(records)} records to {path}")
