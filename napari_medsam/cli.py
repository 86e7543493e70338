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
    """Run a verb; errors the user can fix are printed in plain words (exit code 2)."""
    from .core.errors import MedSAMError

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except MedSAMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cancelled", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
