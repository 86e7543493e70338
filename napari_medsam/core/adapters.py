"""LoRA adapters (peft) on a SamModel: inject, save, load with a base-model check, switch.

An adapter folder holds peft's `adapter_config.json` + `adapter_model.safetensors` and our
`metadata.json` (base model id and weights hash, targets, rank, modality, training-set size,
validation Dice before/after, date, training recipe). No pickle anywhere.

Adapters are injected in place into the model's own modules, so a `Predictor` over the model uses
the active adapter with no other change. Switching between decoder-only adapters keeps every
cached embedding valid; an adapter that touches the image encoder sets `model.encoder_tag`, which
is part of the embedding cache key, so embeddings are recomputed for it and never mixed up.

Adapters whose metadata says `"box_prompts": "base"` (the shipped click adapter) are skipped for
prompts made of boxes only: the base model was trained for boxes, the adapter for clicks.

A fine-tuned decoder adapter carries a domain gate (`core.domain_gate`): on an image unlike its
training images (another modality) the model decodes as if the adapter were not selected, i.e.
with the adapter it was initialised from (the click adapter) or the base model. Switch it off
with `Adapters.use_gate = False` or NAPARI_MEDSAM_ADAPTER_GATE=0.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch

from .adapter_registry import CONFIG_FILE, WEIGHTS_FILE
from .atomic import atomic_folder
from .checkpoints import (
    CLICK_ADAPTER_NAME,
    click_adapter_dir,
    click_adapter_wanted,
)
from .checks import adapter_files
from .domain_gate import DomainGate, gate_wanted
from .errors import CheckpointError, InputError
from .routing import BASE, FALLBACK, Route, choose_decoder
from .storage import check_base_model, read_metadata, write_metadata

# peft matches a string target_modules as a full regex on module names of `_Heads`
DECODER_TARGETS = (r"mask_decoder\.(transformer\..*(q_proj|k_proj|v_proj|out_proj|lin1|lin2)"
                   r"|output_hypernetworks_mlps\.\d+\.layers\.\d+)")
ENCODER_TARGETS = r"image_encoder\..*attn\.qkv"
TARGETS = {"decoder": DECODER_TARGETS, "encoder": f"({ENCODER_TARGETS})|({DECODER_TARGETS})"}


class _Heads(torch.nn.Module):
    """The model's three modules under one root, so peft can address them by name."""

    def __init__(self, model) -> None:
        super().__init__()
        self.image_encoder = model.image_encoder
        self.prompt_encoder = model.prompt_encoder
        self.mask_decoder = model.mask_decoder


def lora_config(targets: str = "decoder", rank: int = 4, alpha: float | None = None,
                dropout: float = 0.0):
    """A peft LoraConfig for "decoder" (attention + MLP linears) or "encoder" (+ TinyViT qkv)."""
    from peft import LoraConfig

    if targets not in TARGETS:
        raise InputError(f"Adapter targets must be 'decoder' or 'encoder', not '{targets}'.")
    return LoraConfig(r=int(rank), lora_alpha=float(alpha if alpha is not None else 2 * rank),
                      lora_dropout=dropout, target_modules=TARGETS[targets], bias="none")


def touches_encoder(config) -> bool:
    return "image_encoder" in str(config.target_modules)


class Adapters:
    """The adapters loaded into one model; at most one is active at a time.

    Get it with `adapters_of(model)`; do not build it directly.
    """

    def __init__(self, model) -> None:
        self.model = model
        self.peft = None  # peft.PeftModel over _Heads(model), made on first use
        self.metadata: dict[str, dict] = {}
        self.active: str | None = None
        self.gates: dict[str, DomainGate] = {}
        self.folders: dict[str, Path] = {}  # where each loaded adapter came from
        self.use_gate = gate_wanted()
        # (adapter, distance, used) of the last gated decode, for the front ends to report
        self.last_gate: tuple[str, float, bool] | None = None

    # ---- inventory ---------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return list(self.metadata)

    def is_encoder(self, name: str) -> bool:
        return touches_encoder(self.peft.peft_config[name])

    # ---- create / load / remove -----------------------------------------------------------------
    def _add(self, name: str, config) -> None:
        if name in self.metadata:
            raise InputError(f"An adapter named '{name}' is already loaded; choose another name.")
        if self.peft is None:
            from peft import PeftModel

            self.peft = PeftModel(_Heads(self.model), config, adapter_name=name)
        else:
            self.peft.add_adapter(name, config)

    def create(self, name: str, targets: str = "decoder", rank: int = 4,
               alpha: float | None = None, init_from: str | None = None
               ) -> dict[str, torch.nn.Parameter]:
        """Inject a fresh adapter (LoRA B = 0: outputs unchanged), make it active and trainable.

        Args:
            init_from: name of a loaded adapter of the same shape to start from (its weights
                are copied), e.g. the click adapter, so fine-tuning keeps what it knows.

        Returns:
            The trainable parameters by name.
        """
        config = lora_config(targets, rank, alpha)
        if init_from is not None:
            src = self.peft.peft_config[init_from]
            config = lora_config(targets, src.r, src.lora_alpha)
            if touches_encoder(src) and targets == "decoder":
                config = lora_config("encoder", src.r, src.lora_alpha)
        self._add(name, config)
        self.metadata[name] = {"targets": "encoder" if touches_encoder(config) else "decoder",
                               "rank": config.r}
        if init_from is not None:
            params = self.parameters(name)
            with torch.no_grad():
                for key, value in self.parameters(init_from).items():
                    params[key.replace(f".{init_from}.", f".{name}.")].copy_(value)
        self.activate(name)
        params = self.parameters(name)
        for p in params.values():
            p.requires_grad_(True)
        return params

    def parameters(self, name: str) -> dict[str, torch.nn.Parameter]:
        """The LoRA tensors of adapter `name`, by peft's parameter name."""
        tag = f".{name}."
        return {k: p for k, p in self.peft.named_parameters() if tag in k and "lora_" in k}

    def load(self, folder: str | Path, name: str | None = None, activate: bool = True) -> str:
        """Load an adapter folder (checked against the base model); returns its name."""
        folder = Path(folder)
        meta = read_metadata(folder)
        check_base_model(meta, self.model)
        if not (folder / CONFIG_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
            raise CheckpointError(f"{folder} is missing {CONFIG_FILE} or {WEIGHTS_FILE}: "
                                  "it is not a complete adapter. Train or copy it again.")
        adapter_files(folder)  # damaged files: a CheckpointError in plain words
        name = name or meta.get("name") or folder.name
        if name in self.metadata:
            self.remove(name)
        try:
            if self.peft is None:
                from peft import PeftModel

                self.peft = PeftModel.from_pretrained(_Heads(self.model), str(folder),
                                                      adapter_name=name, is_trainable=False)
            else:
                self.peft.load_adapter(str(folder), adapter_name=name, is_trainable=False)
        except (ValueError, RuntimeError, KeyError, OSError) as exc:
            raise CheckpointError(f"The adapter in {folder} could not be loaded ({exc}). "
                                  "It may be damaged or made for another model.") from exc
        self.metadata[name] = meta
        self.folders[name] = folder
        gate = None if self.is_encoder(name) else DomainGate.load(folder)
        if gate is not None:
            self.gates[name] = gate
        if activate:
            self.activate(name)
        elif self.active is None:
            self.activate(None)
        return name

    def remove(self, name: str) -> None:
        """Unload adapter `name`; the base model is active afterwards if it was active."""
        if name not in self.metadata:
            return
        active = None if self.active == name else self.active
        del self.metadata[name]
        self.gates.pop(name, None)
        self.folders.pop(name, None)
        if not self.metadata:
            self.peft.unload()  # puts the original layers back in the model's own modules
            self.peft = None
        else:
            self.peft.base_model.set_adapter(active or self.names[0])
            self.peft.delete_adapter(name)
        self.activate(active)

    # ---- switching ---------------------------------------------------------------------------
    def activate(self, name: str | None) -> None:
        """Make adapter `name` active, or none (the base model) with None. No re-encoding is
        needed unless the adapter (or the previous one) changes the image encoder."""
        if name is not None and name not in self.metadata:
            loaded = ", ".join(self.names) or "none"
            raise InputError(f"No adapter named '{name}' is loaded (loaded: {loaded}).")
        if self.peft is not None:
            if name is None:
                self.peft.base_model.disable_adapter_layers()
            else:
                self.peft.base_model.enable_adapter_layers()
                self.peft.base_model.set_adapter(name)
                for p in self.parameters(name).values():
                    p.requires_grad_(False)
        self.active = name
        self.model.encoder_tag = self._encoder_tag(name) if name and self.is_encoder(name) else ""

    def tag(self, name: str) -> str:
        """"lora.<hash>" of adapter `name`: the same id `backends.weights` computes from its
        saved files, so the torch and ONNX paths share exports and embeddings."""
        from .backends.weights import adapter_tag

        config = self.peft.peft_config[name]
        params = ((k.replace(f".{name}.", "."), v.detach().float().cpu().numpy())
                  for k, v in self.parameters(name).items())
        return adapter_tag(params, config.r, config.lora_alpha)

    def _encoder_tag(self, name: str) -> str:
        from .backends.weights import encoder_tag

        return encoder_tag(self.tag(name))

    @contextlib.contextmanager
    def disabled(self) -> Iterator[None]:
        """Run the base model inside this block, whatever adapter is active."""
        if self.peft is None or self.active is None:
            yield
            return
        self.peft.base_model.disable_adapter_layers()
        try:
            yield
        finally:
            self.peft.base_model.enable_adapter_layers()

    def fallback(self, name: str) -> str | None:
        """What decodes instead of adapter `name` on images its gate refuses: the loaded adapter
        it was initialised from (the click adapter, say), else None (the base model)."""
        source = self.metadata.get(name, {}).get("initialised_from")
        if source and source != name and source in self.metadata and source not in self.gates \
                and not self.is_encoder(source):
            return source
        return None

    def gate_verdict(self, features) -> bool | None:
        """The active adapter's domain gate on this embedding: True (like its training images),
        False (unlike them), or None when there is no gate to ask."""
        gate = self.gates.get(self.active or "")
        self.last_gate = None
        if gate is None or not self.use_gate or features is None:
            return None
        distance, accepted = gate.check(features)
        self.last_gate = (self.active, distance, accepted)
        return accepted

    def route(self) -> Route:
        """The decoder routing of the active adapter (see `core.routing`)."""
        name = self.active
        if name is None or self.peft is None:
            return Route()
        fallback = self.fallback(name)
        return Route(
            adapter=True,
            box_base=self.metadata.get(name, {}).get("box_prompts") == "base",
            gated=name in self.gates and self.use_gate,
            fallback=fallback is not None,
            fallback_box_base=bool(fallback) and
            self.metadata.get(fallback, {}).get("box_prompts") == "base",
        )

    @contextlib.contextmanager
    def _switched(self, name: str) -> Iterator[None]:
        """Decode with loaded adapter `name` inside this block (the active one stays active)."""
        self.peft.base_model.set_adapter(name)
        try:
            yield
        finally:
            self.peft.base_model.set_adapter(self.active)
            for key in (name, self.active):
                for p in self.parameters(key).values():
                    p.requires_grad_(False)

    def routed(self, has_points: bool, features=None) -> contextlib.AbstractContextManager:
        """The model for one decode, as `routing.choose_decoder` says: the active adapter, its
        fallback, or the base model."""
        route = self.route()
        if not route.adapter:
            return contextlib.nullcontext()
        verdict = self.gate_verdict(features) if route.gated else None
        choice = choose_decoder(route, has_points, verdict)
        if choice == BASE:
            return self.disabled()
        if choice == FALLBACK:
            return self._switched(self.fallback(self.active))
        return contextlib.nullcontext()

    # ---- saving ------------------------------------------------------------------------------
    def save(self, name: str, folder: str | Path, metadata: dict | None = None) -> Path:
        """Write adapter `name` to `folder` atomically: peft files + metadata.json.

        The old folder (if any) is replaced only once the new one is complete.
        """
        folder = Path(folder)
        meta = {**self.metadata.get(name, {}), **(metadata or {})}
        meta.update(name=meta.get("name") or folder.name, base_model=self.model.model_id,
                    base_model_sha256=self.model.weights_sha256, format="peft-lora")
        with atomic_folder(folder) as tmp:
            self.peft.save_pretrained(str(tmp), selected_adapters=[name])
            nested = tmp / name  # peft writes non-default adapters into a subfolder
            if (nested / CONFIG_FILE).is_file():
                for path in nested.iterdir():
                    path.replace(tmp / path.name)
                nested.rmdir()
            if name in self.gates:
                self.gates[name].save(tmp)
                meta["domain_gate"] = self.gates[name].summary()
            write_metadata(tmp, meta)
            (tmp / "README.md").unlink(missing_ok=True)
        self.metadata[name] = meta
        self.folders[name] = folder
        return folder


def adapters_of(model) -> Adapters:
    """The `Adapters` of a model (made on first use, kept on the model)."""
    found = getattr(model, "adapters", None)
    if not isinstance(found, Adapters):
        found = Adapters(model)
        model.adapters = found
    return found


def routed(model, has_points: bool, features=None):
    """Context for one decode: box-only prompts skip a click-only adapter, and an adapter's
    domain gate may hand an unlike image to its fallback (see `Adapters`)."""
    found = getattr(model, "adapters", None)
    if not isinstance(found, Adapters):
        return contextlib.nullcontext()
    return found.routed(has_points, features)


def base_only(model):
    """Context that runs the base model whatever adapter is active (nothing to do without
    adapters): for learned parts made against the plain decoder, like the auto heads."""
    found = getattr(model, "adapters", None)
    return found.disabled() if isinstance(found, Adapters) else contextlib.nullcontext()


# ---- the shipped click adapter -------------------------------------------------------------------
def attach_click_adapter(model, flag: bool | None = None) -> str | None:
    """Load and activate the shipped click adapter on LiteMedSAM (when wanted and present)."""
    folder = click_adapter_dir()
    if not click_adapter_wanted(flag) or not (folder / CONFIG_FILE).is_file():
        return None
    return adapters_of(model).load(folder, name=CLICK_ADAPTER_NAME)
