"""Automatic segmentation heads: shipped heads vs ground truth, storage, training, verbs."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from datahelpers import load_pair

from napari_medsam.core.autoseg import (
    AutoHead,
    Example,
    HeadTrainConfig,
    PatchPromptHead,
    ShapeExpertHead,
    list_heads,
    load_head,
    save_head,
    segment_embedding,
    train_head,
)
from napari_medsam.core.autoseg.decoding import to_grid
from napari_medsam.core.autoseg.heads import count_parameters
from napari_medsam.core.autoseg.objects import find_objects, frame_size
from napari_medsam.core.autoseg.train import example_loss
from napari_medsam.core.embeddings import Embedding
from napari_medsam.core.errors import CheckpointError, InputError
from napari_medsam.core.metrics import dice
from napari_medsam.core.session import Session

# Dice floors for the shipped heads on the dev images below (their own chosen modes): the Dice
# measured on these images minus 0.05. Dev patients were never trained on.
FLOORS = {
    "camus-patch": {1: 0.85, 2: 0.76, 3: 0.83},  # measured 0.907, 0.819, 0.884
    "camus-shape": {1: 0.86, 2: 0.76, 3: 0.84},  # measured 0.915, 0.810, 0.897
    "ph2-patch": {1: 0.87},  # measured 0.924
    "ph2-shape": {1: 0.87},  # measured 0.927
    "cardiac-mri-patch": {1: 0.91, 2: 0.82, 3: 0.91},  # measured 0.962, 0.870, 0.968
    "cardiac-mri-shape": {1: 0.33, 2: 0.60, 3: 0.67},  # measured 0.378, 0.645, 0.722
    # measured 0.883, 0.888, 0.922, 0.676 (the head trained 10x longer: dev means over 89 slices
    # went up, 0.714 -> 0.762, while these four slices lost 3-4 points on kidneys and spleen)
    "abdomen-mri-patch": {1: 0.83, 2: 0.83, 3: 0.87, 4: 0.62},
    # measured 0.883, 0.901, 0.927, 0.675
    "abdomen-mri-shape": {1: 0.83, 2: 0.85, 3: 0.87, 4: 0.62},
}
CAMUS_DEV = ["patient0027_2CH_ED", "patient0027_4CH_ES", "patient0191_2CH_ES",
             "patient0191_4CH_ED"]
PH2_DEV = ["IMD002", "IMD008", "IMD014"]
DEV_IMAGES = {  # head task -> (dataset, dev images)
    "camus": ("camus", CAMUS_DEV),
    "ph2": ("ph2", PH2_DEV),
    "cardiac-mri": ("acdc", ["patient071_frame01_s03", "patient071_frame01_s06",
                             "patient072_frame01_s02", "patient072_frame01_s04"]),
    "abdomen-mri": ("chaos_t2", ["chaos31_s15", "chaos31_s17", "chaos33_s11", "chaos33_s13"]),
}
REPO = Path(__file__).resolve().parents[1]


def _pairs(manifest, dataset, names):
    return [p for p in manifest if p["dataset"] == dataset
            and any(p["image"].endswith(f"/{n}.png") for n in names)]


@pytest.fixture(scope="module")
def dev_predictor(model):
    """One predictor (memory cache) for the module: each dev image is encoded once."""
    from napari_medsam.core.embeddings import EmbeddingCache
    from napari_medsam.core.predictor import Predictor

    return Predictor(model, EmbeddingCache())


@pytest.fixture(scope="module")
def camus_images(data_dir, manifest):
    pairs = _pairs(manifest, "camus", CAMUS_DEV)
    assert len(pairs) == len(CAMUS_DEV)
    return [load_pair(data_dir, p) for p in pairs]


def test_heads_are_small_and_start_as_the_empty_prompt(model):
    no_mask = model.prompt_encoder.no_mask_embed.weight
    for head in (PatchPromptHead(3, 16, no_mask_embed=no_mask),
                 ShapeExpertHead(3, no_mask_embed=no_mask)):
        assert count_parameters(head) < 1_000_000
        out = head(torch.randn(2, 256, 64, 64))
        assert out.dense.shape == (2, 3, 256, 64, 64) and out.tokens.shape == (2, 3, 1, 256)
        # zero-initialised projection: the dense prompt is the decoder's "no mask" embedding
        torch.testing.assert_close(out.dense[1, 2, :, 7, 9], no_mask[0])
    assert PatchPromptHead(1, 32).grid == 8
    with pytest.raises(ValueError):
        PatchPromptHead(1, 12)


def test_grid_geometry_and_objects():
    emb = Embedding(np.empty(0), (100, 200), (128, 256))  # a wide image inside the 256 square
    assert frame_size(emb, 256) == (128, 256)
    labels = np.zeros((100, 200), np.uint8)
    labels[10:30, 20:60] = 1
    labels[60:90, 150:190] = 1
    grid = to_grid(labels, [1], emb, 256)
    assert grid.shape == (1, 256, 256) and float(grid[0, 128:].max()) == 0.0  # padding is empty
    prob = torch.nn.functional.max_pool2d(grid[None], 16)[0].numpy()
    objects = sorted(find_objects(prob, emb, 256), key=lambda o: o["box"][0])
    assert len(objects) == 2
    x0, y0, x1, y1 = objects[0]["box"]
    assert x0 <= 20 and y0 <= 10 and x1 >= 59 and y1 >= 29 and x1 < 80 and y1 < 45


def _synthetic_examples(n: int, seed: int = 0) -> list[Example]:
    """Embeddings with a square region of distinct features; the target is that square."""
    gen = torch.Generator().manual_seed(seed)
    examples = []
    for _ in range(n):
        feats = torch.randn(256, 64, 64, generator=gen) * 0.3
        y, x = (int(v) for v in torch.randint(8, 40, (2,), generator=gen))
        feats[:32, y : y + 16, x : x + 16] += 1.0
        target = torch.zeros(1, 256, 256)
        target[0, 4 * y : 4 * y + 64, 4 * x : 4 * x + 64] = 1
        truth = target[0].numpy().astype(np.uint16)
        examples.append(Example(feats.half(), target.half(), truth,
                                Embedding(np.empty(0), (256, 256), (256, 256))))
    return examples


@pytest.mark.parametrize("kind", ["patch", "shape"])
def test_tiny_training_run_lowers_the_loss(model, kind):
    examples = _synthetic_examples(4)
    config = HeadTrainConfig(kind=kind, map_steps=30, decoder_steps=4, decoder_batch=2, threads=1)
    torch.manual_seed(0)
    from napari_medsam.core.autoseg.train import build

    before = example_loss(model, build(config, 1, model), examples)
    result = train_head(model, examples, config)
    after = example_loss(model, result.head, examples)
    assert after < 0.8 * before
    assert result.history["map"][-1] < result.history["map"][0]
    assert all(not p.requires_grad or p.grad is None for p in model.mask_decoder.parameters())


def test_training_cancel_and_empty(model):
    from napari_medsam.core.errors import CancelledError

    with pytest.raises(InputError):
        train_head(model, [], HeadTrainConfig())
    with pytest.raises(CancelledError):
        train_head(model, _synthetic_examples(1), HeadTrainConfig(map_steps=5), cancel=lambda: True)


def test_save_load_round_trip_and_wrong_base_model(model, tmp_path):
    head = ShapeExpertHead(3, experts=4, no_mask_embed=model.prompt_encoder.no_mask_embed.weight)
    with torch.no_grad():
        head.templates.normal_()
    meta = {"structures": [1, 2, 3], "names": ["LV", "myocardium", "LA"], "mode": "dense",
            "training_images": 5, "validation": {"dice": {"dense": {"LV": 0.5}}}}
    folder = save_head(tmp_path / "h", head, model, meta)
    loaded = load_head(folder, model)
    x = torch.randn(1, 256, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x).dense, head.eval()(x).dense)
    stored = json.loads((folder / "metadata.json").read_text())
    assert stored["base_model_sha256"] == model.weights_sha256
    assert stored["kind"] == "shape" and stored["config"]["experts"] == 4
    assert loaded.names == ["LV", "myocardium", "LA"] and loaded.structures == [1, 2, 3]
    # saving again replaces the folder whole
    save_head(folder, head, model, {**meta, "training_images": 6})
    assert load_head(folder, model).metadata["training_images"] == 6
    other = SimpleNamespace(model_id="custom:other.pth", weights_sha256="0" * 64,
                            device=torch.device("cpu"))
    with pytest.raises(CheckpointError, match="trained for the model"):
        load_head(folder, other)
    with pytest.raises(CheckpointError, match="No head"):
        load_head(tmp_path / "missing", model)
    (folder / "head.safetensors").write_bytes(b"damaged")
    with pytest.raises(CheckpointError, match="damaged"):
        load_head(folder, model)


def test_shipped_heads_are_listed_and_small():
    heads = list_heads()
    assert set(FLOORS) <= set(heads)
    for folder in heads.values():
        meta = json.loads((folder / "metadata.json").read_text())
        assert meta["parameters"] < 1_000_000
        assert (folder / "head.safetensors").stat().st_size < 4_000_000
        assert meta["validation"]["dice"] and meta["training_images"] >= 20


def _dice_per_structure(predictor, head: AutoHead, images) -> dict[int, float]:
    scores: dict[int, list[float]] = {v: [] for v in head.structures}
    for image, truth in images:
        predictor.set_image(image, "auto")
        labels = segment_embedding(predictor, head).labels
        for v in head.structures:
            scores[v].append(dice(labels == v, truth == v))
    return {v: float(np.mean(s)) for v, s in scores.items()}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FLOORS))
def test_shipped_head_dice_on_dev_patients(name, dev_predictor, data_dir, manifest):
    head = load_head(name, dev_predictor)
    dataset, names = DEV_IMAGES[name.rsplit("-", 1)[0]]
    pairs = _pairs(manifest, dataset, names)
    assert len(pairs) == len(names)
    images = [load_pair(data_dir, p) for p in pairs]
    got = _dice_per_structure(dev_predictor, head, images)
    for value, floor in FLOORS[name].items():
        assert got[value] > floor, f"{name} label {value}: Dice {got[value]:.3f} <= {floor}"


@pytest.mark.slow
def test_session_auto_then_commit(dev_predictor, camus_images):
    image, truth = camus_images[0]
    s = Session(dev_predictor)
    s.set_image(image)
    labels = s.auto("camus-patch")
    assert labels.shape == truth.shape and set(np.unique(labels)) <= {0, 1, 2, 3}
    assert dice(labels == 1, truth == 1) > 0.8
    assert not s.labels.any()  # nothing committed unless asked
    s.labels[:5] = 7  # an object the user drew is never overwritten
    again = s.auto("camus-patch", commit=True)
    assert (s.labels[:5] == 7).all()
    assert ((s.labels == 1) == ((again == 1) & (np.arange(len(again))[:, None] >= 5))).all()
    with pytest.raises(InputError, match="Unknown automatic mode"):
        s.auto("camus-patch", mode="magic")


def test_trim_ends_drops_a_sliver_past_the_structure_only():
    from napari_medsam.core.autoseg.volume import trim_ends

    mask = np.zeros((6, 20, 20), bool)
    mask[1:4, 5:15, 5:15] = True  # 100 px per slice
    mask[0, 9:11, 9:11] = True  # 4 px before it: a sliver, dropped
    mask[4, 6:14, 6:14] = True  # 64 px after it: the structure narrowing, kept
    out = trim_ends(mask)
    assert not out[0].any() and (out[1:] == mask[1:]).all()
    short = np.zeros_like(mask)
    short[2, 9:11, 9:11] = short[3, 5:15, 5:15] = True  # two slices: nothing says which is wrong
    assert (trim_ends(short) == short).all()


def test_presence_split_separates_shape_error_from_slices_drawn_or_missed():
    from napari_medsam.core.autoseg.evaluate import per_slice_dice, presence_split

    truth = np.zeros((5, 10, 10), bool)
    truth[1:4, 2:8, 2:8] = True
    pred = np.zeros_like(truth)
    pred[0, 2:8, 2:8] = True  # drawn on a slice without it
    pred[1:3, 2:8, 2:8] = True  # exact on two slices; slice 3 missed
    held, drawn_without, missed = presence_split(pred, truth)
    assert held == [1.0, 1.0, 0.0] and (drawn_without, missed) == (1, 1)
    assert per_slice_dice(pred, truth) == [0.0, 1.0, 1.0, 0.0]  # both errors count 0 there


@pytest.mark.slow
def test_volume_mode_segments_a_dev_stack_better_than_slice_by_slice(dev_predictor, data_dir):
    """A dev cardiac stack (6 slices, ACDC end-systole) through `Session.auto_volume`: on its own
    the head misses the LV on a slice near the apex; the volume mode re-segments it from its
    neighbours' box. Measured (`accurate`, 2D slices): LV per slice 0.792 -> 0.889, 3D 0.875 ->
    0.953."""
    from napari_medsam.core.autoseg.evaluate import per_slice_dice
    from napari_medsam.core.slice_stacks import stacks

    stack = next(s for s in stacks(data_dir, ["acdc"]) if s.name == "patient077_frame09")
    session = Session(dev_predictor, preset="mri")
    session.set_image(stack.image.astype(np.float32), is_volume=True)
    truth = stack.labels == 3
    alone = session.auto_volume("cardiac-mri-patch", consistent=False, commit=False) == 3
    joint = session.auto_volume("cardiac-mri-patch", consistent=True, commit=False) == 3
    per_slice = np.mean(per_slice_dice(alone, truth)), np.mean(per_slice_dice(joint, truth))
    assert per_slice[1] > per_slice[0] + 0.05 and per_slice[1] > 0.85, per_slice
    assert dice(joint, truth) > dice(alone, truth) and dice(joint, truth) > 0.92
    assert not session.labels.any()  # nothing committed unless asked


def test_main_pieces_drop_a_structure_drawn_again_apart_from_itself():
    from napari_medsam.core.autoseg.volume import MIN_PIECE_FRACTION, main_pieces

    mask = np.zeros((12, 20, 20), bool)
    mask[0:6, 2:12, 2:12] = True  # the organ: 600 voxels
    mask[8:10, 14:18, 14:18] = True  # drawn again two slices past it: 32 voxels, under a tenth
    assert MIN_PIECE_FRACTION * 600 > 32
    out = main_pieces(mask)
    assert (out[0:6] == mask[0:6]).all()
    assert not out[8:].any()
    split = mask.copy()
    split[8:10] = False
    split[7:12, 2:12, 2:12] = True  # the organ again past a slice missed: 500 voxels, kept
    assert (main_pieces(split) == split).all()


@pytest.mark.slow
def test_volume_mode_keeps_a_kidney_in_one_piece(data_dir):
    """A dev abdominal stack (CHAOS 33, 31 slices): the patch head draws the left kidney again on
    six slices past its pole (two separate 3D pieces beside the spleen); the volume mode keeps the
    kidney's main piece only. Measured (`accurate`, as here: its encoder is twice as fast as
    torch's for these 31 slices, the same masks): left kidney per slice 0.673 -> 0.943, 3D 0.873
    -> 0.952."""
    from napari_medsam.core.autoseg import volume as vol
    from napari_medsam.core.autoseg.evaluate import per_slice_dice
    from napari_medsam.core.embeddings import EmbeddingCache
    from napari_medsam.core.runtime import RuntimeSpec, build_predictor
    from napari_medsam.core.slice_stacks import stacks

    predictor = build_predictor(RuntimeSpec(profile="accurate", click_adapter=False),
                                EmbeddingCache())
    stack = next(s for s in stacks(data_dir, ["chaos_t2"]) if s.name == "chaos33")
    session = Session(predictor, preset="mri")
    session.set_image(stack.image.astype(np.float32), is_volume=True)
    truth = stack.labels == 3
    head = load_head("abdomen-mri-patch", predictor)
    alone = vol.segment_volume(session, head, consistent=False)
    whole = vol.make_consistent(session, alone, head.structures, one_object=False) == 3
    one = vol.make_consistent(session, alone, head.structures, one_object=True) == 3
    per_slice = np.mean(per_slice_dice(whole, truth)), np.mean(per_slice_dice(one, truth))
    assert per_slice[1] > per_slice[0] + 0.2 and per_slice[1] > 0.9, per_slice
    assert dice(one, truth) > dice(whole, truth) + 0.05 and dice(one, truth) > 0.92
    assert not (one & ~whole).any()  # only drops


@pytest.mark.slow
def test_cli_auto_writes_labels(data_dir, manifest, tmp_path):
    from napari_medsam.cli import main
    from napari_medsam.core.io import read_image

    pair = _pairs(manifest, "ph2", PH2_DEV[:1])[0]
    out = tmp_path / "auto.png"
    rc = main(["auto", str(data_dir / pair["image"]), "--head", "ph2-patch", "-o", str(out),
               "--no-disk-cache", "--device", "cpu"])
    assert rc == 0
    got = np.asarray(read_image(out).data)
    truth = np.asarray(read_image(data_dir / pair["mask"]).data)
    assert dice(got == 1, truth == 1) > 0.8
    assert main(["auto", str(data_dir / pair["image"]), "--head", "nonexistent", "-o",
                 str(out), "--no-disk-cache", "--device", "cpu"]) == 2


@pytest.mark.slow
def test_cli_auto_on_a_volume_segments_every_slice(data_dir, manifest, tmp_path):
    import nibabel as nib

    from napari_medsam.cli import main
    from napari_medsam.core.io import read_image

    image, truth = load_pair(data_dir, _pairs(manifest, "camus", CAMUS_DEV[:1])[0])
    # two identical slices as a NIfTI volume (x, y, z): the head runs per slice
    nib.save(nib.Nifti1Image(np.stack([image.T, image.T], axis=-1).astype(np.int16), np.eye(4)),
             tmp_path / "echo.nii.gz")
    out = tmp_path / "auto.nii.gz"
    assert main(["auto", str(tmp_path / "echo.nii.gz"), "--head", "camus-patch", "-o", str(out),
                 "--no-disk-cache", "--device", "cpu"]) == 0
    labels = np.asarray(read_image(out).data)
    assert labels.shape == (2, *truth.shape)
    for z in (0, 1):
        assert dice(labels[z] == 1, truth == 1) > 0.8


@pytest.mark.slow
def test_cli_train_head_on_an_images_masks_folder(tmp_path):
    from napari_medsam.cli import main

    train = Path(os.environ.get("NAPARI_MEDSAM_TRAIN", REPO.parent / "shared" / "train"))
    pairs = sorted((train / "dermoscopy" / "ph2" / "images").glob("*.png"))[:2]
    if len(pairs) < 2:
        pytest.skip(f"training data not found at {train}")
    for sub in ("images", "masks"):
        (tmp_path / "data" / sub).mkdir(parents=True)
    for p in pairs:  # the images/ + masks/ layout (no manifest) a user would have
        (tmp_path / "data" / "images" / p.name).symlink_to(p)
        (tmp_path / "data" / "masks" / p.name).symlink_to(p.parents[1] / "masks" / p.name)
    out = tmp_path / "head"
    assert main(["train-head", str(tmp_path / "data"), "--kind", "shape", "--labels", "1:lesion",
                 "--map-steps", "3", "--decoder-steps", "1", "--threads", "1", "-o", str(out),
                 "--no-disk-cache", "--device", "cpu"]) == 0
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["training_images"] == 2 and meta["names"] == ["lesion"]
    assert meta["kind"] == "shape" and meta["parameters"] < 1_000_000
    assert main(["train-head", str(tmp_path / "data"), "--kind", "patch", "--labels", "x:y",
                 "-o", str(out)]) == 2  # a plain-words error, not a traceback
