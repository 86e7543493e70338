"""One decoder route for torch and ONNX: the pure rule, and both backends giving the same logits
for box-only prompts, clicks, box + clicks, a gate-refused image and multimask (issue 17)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from napari_medsam.core.adapters import CLICK_ADAPTER_NAME, adapters_of
from napari_medsam.core.backends.torch_backend import TorchBackend
from napari_medsam.core.domain_gate import DomainGate, describe
from napari_medsam.core.routing import ADAPTER, BASE, FALLBACK, Route, choose_decoder
from napari_medsam.core.runtime import RuntimeSpec, build_backend


def test_route_rules():
    click = Route(adapter=True, box_base=True)
    assert choose_decoder(Route(), True) == BASE
    assert choose_decoder(click, has_points=False) == BASE  # boxes stay with the base model
    assert choose_decoder(click, has_points=True) == ADAPTER
    tuned = Route(adapter=True, gated=True, fallback=True, fallback_box_base=True)
    assert choose_decoder(tuned, False, gate_accepts=True) == ADAPTER  # fine-tuned on boxes too
    assert choose_decoder(tuned, True, gate_accepts=False) == FALLBACK  # the click adapter
    assert choose_decoder(tuned, False, gate_accepts=False) == BASE  # ... which leaves boxes
    alone = Route(adapter=True, gated=True)
    assert choose_decoder(alone, True, gate_accepts=False) == BASE
    assert tuned.decoders() == {ADAPTER, FALLBACK, BASE} and alone.decoders() == {ADAPTER, BASE}
    assert Route().decoders() == {BASE} and click.decoders() == {ADAPTER, BASE}


@pytest.fixture(scope="module")
def gated_model(model, tmp_path_factory):
    """LiteMedSAM with the click adapter and a fine-tuned adapter initialised from it, whose
    domain gate accepts one kind of embedding and refuses another."""
    tuned = copy.deepcopy(model)
    tuned.adapters = None
    ads = adapters_of(tuned)
    ads.load(model.adapters.folders[CLICK_ADAPTER_NAME], name=CLICK_ADAPTER_NAME)
    params = ads.create("tuned", init_from=CLICK_ADAPTER_NAME)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for key, value in params.items():
            if "lora_B" in key:
                value.add_(torch.randn(value.shape, generator=gen) * 0.05)
    rng = np.random.default_rng(0)
    like = rng.standard_normal((256, 64, 64)).astype(np.float32) * 0.5
    seen = [like + rng.normal(0, 0.05, like.shape).astype(np.float32) for _ in range(4)]
    ads.gates["tuned"] = DomainGate.fit(np.stack([describe(f) for f in seen]))
    ads.metadata["tuned"]["initialised_from"] = CLICK_ADAPTER_NAME
    ads.save("tuned", tmp_path_factory.mktemp("adapters") / "tuned")
    ads.activate("tuned")
    unlike = (rng.standard_normal((256, 64, 64)) * 2.0 + 1.0).astype(np.float32)
    return tuned, like, unlike


def test_torch_and_onnx_route_alike(gated_model, tmp_path):
    tuned, like, unlike = gated_model
    torch_b = TorchBackend(tuned)
    onnx_b = build_backend(RuntimeSpec(profile="accurate", threads=2), model=tuned,
                           folder=tmp_path / "onnx")
    assert onnx_b.route == adapters_of(tuned).route()
    box = np.array([[40.0, 50.0, 180.0, 200.0]])
    pts, labels = np.array([[[90.0, 100.0]]]), np.array([[1]])
    prompts = {"box": (None, None, box), "clicks": (pts, labels, None),
               "box+clicks": (pts, labels, box)}
    used = {}
    for image, feats in (("like", like), ("unlike", unlike)):
        for name, (coords, labs, boxes) in prompts.items():
            for multimask in (False, True):
                want, want_iou = torch_b.decode(torch_b.load_features(feats), coords, labs,
                                                boxes, None, multimask)
                got, iou = onnx_b.decode(onnx_b.load_features(feats), coords, labs, boxes,
                                         None, multimask)
                assert np.abs(got - want).max() < 2e-3 * max(1.0, np.abs(want).max()), \
                    (image, name, multimask)
                assert np.allclose(iou, want_iou, atol=2e-3)
                used[(image, name)] = onnx_b.last_gate[1]
    assert all(used[("like", n)] for n in prompts) and not any(used[("unlike", n)]
                                                               for n in prompts)
