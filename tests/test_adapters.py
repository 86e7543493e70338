"""Adapter engine: inject, save/load, base check, switching, cancel/resume, corrections, CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from datahelpers import load_pair

from napari_medsam.core.adapter_registry import find_adapter, list_adapters, registry_path
from napari_medsam.core.adapters import adapters_of
from napari_medsam.core.corrections import CorrectionStore, to_train_set
from napari_medsam.core.domain_gate import GATE_FILE, DomainGate, describe
from napari_medsam.core.embeddings import EmbeddingCache
from napari_medsam.core.errors import CancelledError, CheckpointError
from napari_medsam.core.metrics import bbox
from napari_medsam.core.predictor import Predictor
from napari_medsam.core.runtime import RuntimeSpec, load_torch
from napari_medsam.core.session import Session
from napari_medsam.core.storage import METADATA_FILE
from napari_medsam.core.training import (
    TrainConfig,
    TrainImage,
    TrainSet,
    finetune,
    from_manifest,
    resume_dir,
    to_model_frame,
    train,
)
from napari_medsam.core.training.rollout import seg_loss, whole_image_objects
from napari_medsam.core.zoom import ZoomPolicy

TINY = dict(batch_size=2, max_clicks=2, val_clicks=2, val_every=1, lr=5e-3)


@pytest.fixture(scope="module")
def base():
    """A LiteMedSAM without the click adapter (this module adds its own adapters)."""
    return load_torch(RuntimeSpec(click_adapter=False))


@pytest.fixture(scope="module")
def camus(data_dir, manifest):
    """Two real echo images (different patients) with their labels."""
    pairs = [p for p in manifest if p["dataset"] == "camus"]
    return [load_pair(data_dir, p) for p in (pairs[0], pairs[-1])]


@pytest.fixture(scope="module")
def shared_cache():
    return EmbeddingCache()


@pytest.fixture(scope="module")
def tiny_sets(base, camus, shared_cache):
    """One CAMUS dev image to train on, one of another patient to validate on (mechanics only;
    the Dice of a trained adapter is tested in test_clicks.py)."""
    pred = Predictor(base, shared_cache)
    sets = []
    for i, (image, labels) in enumerate(camus):
        frame, size = to_model_frame(labels)
        part = TrainSet()
        part.add(TrainImage(pred.set_image(image), frame, size, f"patient{i}", "camus"))
        sets.append(part)
    return sets


def test_training_set_from_manifest(base, data_dir, manifest, shared_cache):
    case = next(p["case"] for p in manifest if p["dataset"] == "ph2")
    data = from_manifest(data_dir, Predictor(base, shared_cache), ["ph2"], cases=[case])
    assert len(data) == 1 and data.groups == [f"ph2/{case}"]
    truth, valid = data.truth(0), data.valid(0)
    assert truth.shape == (256, 256) and truth.any() and not (truth & ~valid).any()
    assert valid[0].all() and not valid[-1].any()  # landscape image: padding at the bottom


def prompts(image, labels):
    ys, xs = np.nonzero(labels == 1)
    point = np.array([[xs.mean(), ys.mean()]])
    box = np.array([xs.min() - 3, ys.min() - 3, xs.max() + 3, ys.max() + 3], float)
    return point, box


def outputs(pred: Predictor, image, labels) -> list[np.ndarray]:
    pred.set_image(image)
    point, box = prompts(image, labels)
    return [pred.predict(points=point, labels=np.array([1])).low_res_logits,
            pred.predict(box=box).low_res_logits,
            pred.predict(points=point, labels=np.array([1]), box=box).low_res_logits]


def perturb(params: dict, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params.values():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)


def folder_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for f in sorted(folder.iterdir()):
        digest.update(f.name.encode() + f.read_bytes())
    return digest.hexdigest()


def test_fresh_adapter_changes_nothing(base, camus):
    image, labels = camus[0]
    pred = Predictor(base)
    before = outputs(pred, image, labels)
    ad = adapters_of(base)
    params = ad.create("fresh", rank=4)
    assert params and all(p.requires_grad for p in params.values())
    assert all(float(p.abs().max()) == 0 for k, p in params.items() if "lora_B" in k)
    after = outputs(pred, image, labels)
    ad.remove("fresh")
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)
    assert ad.active is None and not ad.names


def test_save_load_round_trip_and_switch(base, camus, tmp_path):
    image, labels = camus[0]
    pred = Predictor(base)
    plain = outputs(pred, image, labels)
    ad = adapters_of(base)
    perturb(ad.create("trained", rank=4))
    trained = outputs(pred, image, labels)
    assert np.abs(trained[0] - plain[0]).max() > 1e-3  # the adapter does change the output
    ad.save("trained", tmp_path / "ad", {"modality": "ultrasound"})
    ad.remove("trained")
    files = {p.name for p in (tmp_path / "ad").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", METADATA_FILE} <= files
    assert not any(f.endswith((".bin", ".pt", ".pth", ".pkl")) for f in files)  # no pickle
    meta = json.loads((tmp_path / "ad" / METADATA_FILE).read_text())
    assert meta["base_model_sha256"] == base.weights_sha256 and meta["rank"] == 4

    other = load_torch(RuntimeSpec(click_adapter=False))
    p2 = Predictor(other)
    name = adapters_of(other).load(tmp_path / "ad")
    for a, b in zip(trained, outputs(p2, image, labels), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    # switching a decoder adapter keeps the embedding cache key (no re-encoding)
    key_on = p2.image_key(image)
    adapters_of(other).activate(None)
    assert p2.image_key(image) == key_on
    for a, b in zip(plain, outputs(p2, image, labels), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    adapters_of(other).activate(name)
    np.testing.assert_allclose(outputs(p2, image, labels)[0], trained[0], atol=1e-5)


def test_wrong_base_model_refused(base, tmp_path):
    ad = adapters_of(base)
    ad.create("x", rank=2)
    ad.save("x", tmp_path / "x")
    ad.remove("x")
    meta = json.loads((tmp_path / "x" / METADATA_FILE).read_text())
    meta["base_model_sha256"] = "0" * 64
    (tmp_path / "x" / METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="trained for the model"):
        adapters_of(base).load(tmp_path / "x")
    assert not adapters_of(base).names


def test_encoder_adapter_changes_cache_key(base, camus):
    image, _ = camus[0]
    pred = Predictor(base)
    key = pred.image_key(image)
    ad = adapters_of(base)
    perturb(ad.create("enc", targets="encoder", rank=2))
    ad.activate("enc")
    assert base.encoder_tag and pred.image_key(image) != key
    ad.remove("enc")
    assert base.encoder_tag == "" and pred.image_key(image) == key


def test_cancel_keeps_previous_adapter(base, camus, tiny_sets, shared_cache, tmp_path):
    image, labels = camus[0]
    ad = adapters_of(base)
    perturb(ad.create("prev", rank=4), seed=1)
    out = tmp_path / "prev"
    ad.save("prev", out)
    ad.remove("prev")
    ad.load(out)
    digest = folder_digest(out)
    pred = Predictor(base)
    before = outputs(pred, image, labels)
    train_set, val_set = tiny_sets
    calls = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > 2  # after two training steps

    with pytest.raises(CancelledError):
        finetune(base, train_set, val_set, shared_cache, out, TrainConfig(steps=50, **TINY),
                 cancel=cancel)
    assert folder_digest(out) == digest  # the adapter on disk is untouched
    assert ad.names == ["prev"] and ad.active == "prev"  # and still the one in use
    for a, b in zip(before, outputs(pred, image, labels), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert (resume_dir(out) / "state.json").is_file()  # a checkpoint to resume from
    saved = json.loads((resume_dir(out) / "state.json").read_text())["step"]
    steps: list[int] = []
    result = finetune(base, train_set, val_set, shared_cache, out,
                      TrainConfig(steps=saved + 1, **TINY), resume=True, activate=False,
                      progress=lambda p: steps.append(p.step))
    assert steps == [saved + 1] and result.steps == saved + 1  # went on from the checkpoint
    assert not resume_dir(out).exists()
    ad.remove("prev")


def test_finetune_saves_validated_adapter_and_resumes(base, tiny_sets, shared_cache, tmp_path):
    train_set, val_set = tiny_sets
    ad = adapters_of(base)
    params = ad.create("resumable", rank=2)
    ckpt = tmp_path / "ckpt"
    config = TrainConfig(steps=2, **TINY)
    first = train(base, params, train_set, val_set, shared_cache, config, checkpoint_dir=ckpt)
    saved = json.loads((ckpt / "state.json").read_text())
    assert saved["step"] == 2 and first.steps == 2
    more = TrainConfig(steps=3, **TINY)
    resumed = train(base, params, train_set, val_set, shared_cache, more, checkpoint_dir=ckpt)
    assert resumed.steps == 3 and [h["step"] for h in resumed.history] == [0, 1, 2, 3]
    ad.remove("resumable")

    out = tmp_path / "echo"
    result = finetune(base, train_set, val_set, shared_cache, out, TrainConfig(steps=2, **TINY),
                      metadata={"modality": "ultrasound"}, init_from=None)
    meta = json.loads((out / METADATA_FILE).read_text())
    assert meta["val_dice_before"]["click1"] == pytest.approx(result.val_before["click1"])
    assert meta["training_set"]["objects"] == len(train_set) and meta["recipe"]["steps"] == 2
    assert ad.active == "echo" and not resume_dir(out).exists()
    assert meta["domain_gate"]["images"] == 2 and (out / GATE_FILE).is_file()
    ad.remove("echo")


def test_own_box_loss_leaves_out_objects_the_app_zooms_on():
    """The click adapter's own box answer is trained on objects decoded on the whole image;
    small ones (boxed on a zoomed window in the app) weigh nothing in that loss."""
    yy, xx = np.mgrid[:256, :256]
    valid = np.zeros((2, 256, 256), bool)
    valid[:, :200] = True  # a 200 x 256 image padded to the model's square
    truth = np.stack([(yy - 100) ** 2 + (xx - 120) ** 2 <= 30**2,   # 61 px: the whole image
                      (yy - 100) ** 2 + (xx - 120) ** 2 <= 5**2])   # 11 px < 0.15 * 256: zoom
    weight = whole_image_objects(truth, valid, ZoomPolicy())
    assert weight.tolist() == [1.0, 0.0]
    t = torch.from_numpy(truth[:, None].astype(np.float32))
    v = torch.from_numpy(valid[:, None].astype(np.float32))
    logits = torch.randn(2, 1, 256, 256)
    assert seg_loss(logits, t, v, torch.from_numpy(weight)) == pytest.approx(
        float(seg_loss(logits[:1], t[:1], v[:1])), rel=1e-5)


def test_click_recipe_measures_its_own_box_answer_and_keeps_the_last_step(
        base, tiny_sets, shared_cache):
    """The click adapter's recipe: box-only prompts go to the base model, the adapter's own
    box answer is trained too (box_keep) and measured (box_own); keep="last" runs the whole
    schedule and keeps its end, whatever the validation score does."""
    train_set, val_set = tiny_sets
    ad = adapters_of(base)
    params = ad.create("clicky", rank=2)
    config = TrainConfig(steps=3, box_prompts="base", box_keep=1.0, keep="last", patience=1,
                         **TINY)
    result = train(base, params, train_set, val_set, shared_cache, config,
                   base_context=ad.disabled)
    assert result.steps == 3 and result.best_step == 3 and result.stopped == "steps"
    assert [h["step"] for h in result.history] == [0, 1, 2, 3]
    assert result.val_before["box_own"] == pytest.approx(result.val_before["box"])  # fresh LoRA
    assert result.val_after == {k: v for k, v in result.history[-1].items()
                                if k not in ("step", "loss")}
    assert result.val_after["box"] == result.val_before["box"]  # the base model's boxes
    ad.remove("clicky")


def test_domain_gate_fit_and_files(tmp_path, caplog):
    rng = np.random.default_rng(0)
    near = rng.normal(0, 1, (12, 8, 4, 4)).astype(np.float32)
    profiles = np.stack([describe(f) for f in near])
    gate = DomainGate.fit(profiles, [f"p{i // 3}" for i in range(12)])
    assert gate.threshold >= 1.5 and all(gate.accepts(f) for f in near)
    assert not gate.accepts(near[0] * 3 + 2)  # another kind of image
    assert gate.distance(torch.from_numpy(near[1])) == pytest.approx(gate.distance(near[1]))
    gate.save(tmp_path)
    again = DomainGate.load(tmp_path)
    assert again.threshold == pytest.approx(gate.threshold) and again.images == 12
    np.testing.assert_allclose(again.center, gate.center, rtol=1e-6)
    (tmp_path / GATE_FILE).write_bytes(b"not a safetensors file")
    assert DomainGate.load(tmp_path) is None and "could not be read" in caplog.text


def test_domain_gate_keeps_adapter_off_other_modalities(base, tiny_sets, shared_cache,
                                                        data_dir, manifest, tmp_path):
    """An echo adapter decodes echo; on a dermoscopy image the base model decodes instead."""
    train_set, val_set = tiny_sets
    out = tmp_path / "echo-gated"
    finetune(base, train_set, val_set, shared_cache, out, TrainConfig(steps=3, **TINY),
             init_from=None)
    ad = adapters_of(base)
    pred = Predictor(base, shared_cache)
    ph2 = load_pair(data_dir, next(p for p in manifest if p["dataset"] == "ph2"))
    echo = load_pair(data_dir, [p for p in manifest if p["dataset"] == "camus"][5])
    try:
        for (image, labels), same_kind in ((echo, True), (ph2, False)):
            pred.set_image(image)
            box = bbox(labels > 0, 5)
            logits = pred.predict(box=box).low_res_logits
            assert ad.last_gate[2] is same_kind
            with ad.disabled():
                base_logits = pred.predict(box=box).low_res_logits
            assert np.array_equal(logits, base_logits) is not same_kind
            ad.use_gate = False
            assert not np.array_equal(pred.predict(box=box).low_res_logits, base_logits)
            ad.use_gate = True
    finally:
        ad.use_gate = True
        ad.remove("echo-gated")


def test_corrections_store_records_commits(base, camus, tmp_path):
    image, labels = camus[0]
    session = Session(Predictor(base))
    session.corrections = CorrectionStore(tmp_path / "project")
    session.source = "patient_a.png"
    session.set_image(image)
    _, box = prompts(image, labels)
    session.set_box(box)
    label = session.commit()
    session.commit(mask=labels == 3)
    store = CorrectionStore(tmp_path / "project")
    records = list(store)
    assert len(store) == 2 and records[0].label == label and records[0].box == list(box)
    np.testing.assert_array_equal(store.image(records[0]), image)
    np.testing.assert_array_equal(store.mask(records[1]), labels == 3)
    assert not list((tmp_path / "project").rglob(".tmp-*"))  # atomic: no leftovers
    data = to_train_set(store, session.predictor)
    assert len(data) == 2 and data.groups == ["patient_a.png"]


def test_registry_and_cli(base, tmp_path, monkeypatch, capsys):
    from napari_medsam.cli import main

    monkeypatch.setenv("NAPARI_MEDSAM_ADAPTERS", str(tmp_path / "reg"))
    ad = adapters_of(base)
    ad.create("ct-liver", rank=2)
    ad.save("ct-liver", registry_path("ct-liver", "ct"), {"modality": "ct"})
    ad.remove("ct-liver")
    names = [(a.modality, a.name) for a in list_adapters() if not a.shipped]
    assert names == [("ct", "ct-liver")]
    assert find_adapter("ct/ct-liver") == registry_path("ct-liver", "ct")
    assert main(["adapters", "list"]) == 0
    assert "ct-liver" in capsys.readouterr().out
    assert main(["adapters", "info", "ct-liver"]) == 0
    assert "LoRA rank 2" in capsys.readouterr().out
    assert main(["adapters", "info", "nope"]) == 2


def test_finetune_cli_on_corrections(base, camus, tmp_path, monkeypatch, capsys):
    from napari_medsam.cli import main

    monkeypatch.setenv("NAPARI_MEDSAM_ADAPTERS", str(tmp_path / "reg"))
    store = CorrectionStore(tmp_path / "project")
    pred = Predictor(base)
    for i, (image, labels) in enumerate(camus):
        store.add(image, labels == 1, key=pred.set_image(image), label=1, source=f"p{i}",
                  modality="ultrasound", model=base.cache_id)
    code = main(["finetune", str(tmp_path / "project"), "--out", "echo", "--modality",
                 "ultrasound", "--steps", "2", "--rank", "2", "--no-click-adapter",
                 "--cache-dir", str(tmp_path / "cache"), "--threads", "1"])
    assert code == 0
    out = capsys.readouterr().out
    assert "validating on 1" in out and "click1" in out
    meta = json.loads((registry_path("echo", "ultrasound") / METADATA_FILE).read_text())
    assert meta["modality"] == "ultrasound" and meta["rank"] == 2
