"""`napari-medsam` command line. Each verb lives in `napari_medsam/commands/<verb>.py`."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from . import __version__

# module name in napari_medsam.commands; each defines `register(subparsers)`
COMMANDS = ["demo", "segment", "embed", "evaluate", "propagate", "auto", "train_head", "finetune",
            "adapters", "export", "bench", "batch"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-medsam",
        description="Segment medical images with LiteMedSAM (or your SAM/MedSAM checkpoint).",
    )
    parser.add_argument("--version", action="version", version=f"napari-medsam {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"napari_medsam.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a verb. Every failure is one `error: ...` line in plain words: exit 2 for what the
    user can fix (bad input, a damaged file, a full disk: `core.errors.MedSAMError`; argparse's
    usage errors too), 130 for Ctrl-C; anything else is a bug: a short message naming the log
    file that holds the traceback, exit 70 (`core.report`)."""
    from .core.errors import MedSAMError
    from .core.report import explain

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("cancelled", file=sys.stderr)
        return 130
    except MedSAMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # the last resort: a short message, the traceback in a log file
        failure = explain(exc, f"napari-medsam {' '.join(sys.argv[1:] if argv is None else argv)}")
        print(f"error: {failure.text}", file=sys.stderr)
        return failure.code


if __name__ == "__main__":
    sys.exit(main())
