"""`napari-medsam bench`: what each execution profile costs on this machine, and `auto`'s pick."""

from __future__ import annotations

import argparse

from ..core import checks
from .common import arg


def register(sub) -> None:
    p = sub.add_parser("bench", help="measure the execution profiles on this machine",
                       description="Measure encoder and click latency of the accurate, "
                       "balanced and fast profiles here (exporting them if needed), store it "
                       "for --profile auto, and print which profile auto picks.")
    p.add_argument("--click-ms", type=arg(checks.positive), default=None,
                   help="latency budget per click for auto (default 60)")
    p.add_argument("--encode-ms", type=arg(checks.positive), default=None,
                   help="latency budget per slice embedding for auto (default 1500)")
    p.add_argument("--threads", type=arg(checks.whole), default=None,
                   help="threads (default: all cores)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..core.backends.weights import resolve_model
    from ..core.profiles import Budget, choose_auto, get_profile, profile_costs

    info = resolve_model()
    budget = Budget(**{k: v for k, v in (("click_ms", args.click_ms),
                                         ("encode_ms", args.encode_ms)) if v is not None})
    costs = profile_costs(info, args.threads, remeasure=True)
    print(f"{'profile':10s} {'encode ms':>10s} {'click ms':>9s}  what")
    for name, cost in costs.items():
        summary = get_profile(name).summary
        print(f"{name:10s} {cost.encode_ms:10.0f} {cost.click_ms:9.1f}  {summary}")
    print(f"auto picks: {choose_auto(costs, budget)} (budget {budget.click_ms:g} ms per click, "
          f"{budget.encode_ms:g} ms per slice)")
    return 0
