"""`napari-medsam adapters list|info`: the shipped adapters and the user's registry."""

from __future__ import annotations

import argparse
import json


def register(sub) -> None:
    p = sub.add_parser("adapters", help="list LoRA adapters or show one's details",
                       description="Adapters are kept per modality in the registry folder "
                       "($NAPARI_MEDSAM_ADAPTERS, else ~/.local/share/napari-medsam/adapters); "
                       "the click adapter ships with the package.")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    lst = verbs.add_parser("list", help="every adapter: modality, name, targets, validation Dice")
    lst.add_argument("--registry", default=None, help="registry folder to list")
    lst.set_defaults(func=run_list)
    info = verbs.add_parser("info", help="the metadata of one adapter")
    info.add_argument("adapter", help="adapter folder, name or modality/name")
    info.add_argument("--registry", default=None, help="registry folder to search")
    info.add_argument("--json", action="store_true", help="print the raw metadata")
    info.set_defaults(func=run_info)


def _dice(meta: dict) -> str:
    after = meta.get("val_dice_after") or {}
    keys = [k for k in ("box", "click1", "click3", "click5") if k in after]
    return " ".join(f"{k} {after[k]:.3f}" for k in keys)


def run_list(args: argparse.Namespace) -> int:
    from ..core.adapter_registry import list_adapters, registry_dir

    found = list_adapters(args.registry)
    print(f"registry: {args.registry or registry_dir()}")
    if not found:
        print("no adapters found")
        return 0
    print(f"{'modality':<12}{'name':<24}{'targets':<9}{'rank':>5}  validation Dice")
    for a in found:
        name = a.name + (" (shipped)" if a.shipped else "")
        print(f"{a.modality:<12}{name:<24}{a.metadata.get('targets', '?'):<9}"
              f"{a.metadata.get('rank', '?'):>5}  {_dice(a.metadata)}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    from ..core.adapter_registry import WEIGHTS_FILE, find_adapter
    from ..core.storage import read_metadata

    folder = find_adapter(args.adapter, args.registry)
    meta = read_metadata(folder)
    if args.json:
        print(json.dumps(meta, indent=1, sort_keys=True))
        return 0
    size = (folder / WEIGHTS_FILE).stat().st_size / 1024
    train = meta.get("training_set", {})
    lines = [
        f"adapter   {meta.get('name', folder.name)}  ({folder})",
        f"modality  {meta.get('modality', 'any')}",
        f"base      {meta.get('base_model')} (weights {meta.get('base_model_sha256', '')[:12]}...)",
        f"targets   {meta.get('targets')}, LoRA rank {meta.get('rank')}, {size:.0f} KiB",
        f"boxes     {'base model' if meta.get('box_prompts') == 'base' else 'this adapter'}",
        f"trained   {meta.get('date', '?')} on {train.get('objects', '?')} objects "
        f"({train.get('groups', '?')} patients/images)",
    ]
    gate = meta.get("domain_gate")
    lines.append(f"images    only those like its {gate['images']} training images (domain gate, "
                 f"distance <= {gate['threshold']}); others use the model without it"
                 if gate else "images    every image (no domain gate)")
    before, after = meta.get("val_dice_before") or {}, meta.get("val_dice_after") or {}
    for key in before:
        lines.append(f"  {key:<8} Dice {before[key]:.3f} -> {after.get(key, float('nan')):.3f}")
    print("\n".join(lines))
    return 0
