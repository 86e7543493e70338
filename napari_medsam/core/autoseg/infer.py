"""Run a trained head on the predictor's current image: one label map, every structure, no click.

Modes (per structure; the head's metadata holds the ones that validated best):
- "dense": the head's dense prompt + query token drive the decoder (the trained path).
- "box": separate objects of the head's low-res map (connected regions) become boxes for the
  ordinary box-prompt path of the model.
- "refine": "dense" first, then the box around each structure's mask is decoded by the box path
  (the box prompt is what LiteMedSAM was trained on; this sharpens edges of blob-like objects).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError, NoImageError
from ..metrics import bbox
from ..predictor import Predictor
from .objects import find_objects, merge_structures, to_image

MODES = ("dense", "box", "refine")
BOX_MARGIN = 5  # pixels, as in the box-prompt evaluation


@dataclass
class AutoHead:
    """A head: its metadata (structures, names, base model, mode...) and folder; it runs as
    `head.onnx` on onnxruntime next to an ONNX backend (no torch), else as its torch module.

    Args:
        module: an nn.Module already at hand (training); else loaded from the folder on use.
    """

    metadata: dict
    folder: Path | None = None
    module: object = None
    _session: object = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.metadata.get("name") or (self.folder.name if self.folder else "head")

    @property
    def kind(self) -> str:
        return self.metadata["kind"]

    @property
    def structures(self) -> list[int]:
        """Label values written for each output channel, e.g. [1, 2, 3]."""
        return [int(v) for v in self.metadata["structures"]]

    @property
    def names(self) -> list[str]:
        return list(self.metadata.get("names") or [str(v) for v in self.structures])

    @property
    def mode(self) -> str | dict:
        """"dense", "box", "refine", or {structure name: mode}."""
        return self.metadata.get("mode", "dense")

    @property
    def keep_largest(self) -> bool:
        return bool(self.metadata.get("keep_largest", True))

    @property
    def onnx_path(self) -> Path:
        return (self.folder or Path(".")) / "head.onnx"

    def torch_module(self, device="cpu"):
        """The head's nn.Module (imports torch; loaded once)."""
        if self.module is None:
            from ..errors import require_torch

            require_torch(f"The head '{self.name}' on this profile")
            from .torch_run import load_module

            self.module = load_module(self.folder, self.metadata, device)
        return self.module

    def run(self, predictor: Predictor) -> tuple[np.ndarray, np.ndarray]:
        """(head logits (S, g, g), decoder logits (S, 256, 256)) on the current embedding."""
        backend = predictor.backend
        if backend.name == "onnxruntime" and self.module is None and self.onnx_path.is_file():
            if self._session is None:
                from ..backends.onnx_backend import open_session

                self._session = open_session(self.onnx_path, getattr(backend, "threads", None))
            feats = np.ascontiguousarray(predictor.features, dtype=np.float32)
            lowres, dense, tokens = self._session.run(None, {"embedding": feats})
            return lowres[0], backend.decode_dense(feats, dense[0], tokens[0])
        from .torch_run import run

        model = predictor.model
        return run(self.torch_module(model.device), model, predictor.features)


@dataclass
class AutoResult:
    """Output of one automatic segmentation.

    labels: uint16 (H, W) label map with the head's structure values (0 = background).
    logits: float32 (S, H, W) per-structure logits on the image grid (> 0 is foreground).
    objects: separate objects found in the head's low-res map (boxes/points, image pixels).
    """

    labels: np.ndarray
    logits: np.ndarray
    objects: list[dict] = field(default_factory=list)


def resolve_modes(head: AutoHead, mode=None) -> list[str]:
    """One mode per structure from a name, a list, a {structure name: mode} dict or the head's."""
    mode = head.metadata.get("mode", "dense") if mode is None else mode
    n = len(head.structures)
    if isinstance(mode, str):
        modes = [mode] * n
    elif isinstance(mode, dict):
        modes = [mode.get(name, "dense") for name in head.names]
    else:
        modes = list(mode)
    bad = [m for m in modes if m not in MODES]
    if bad or len(modes) != n:
        raise InputError(f"Unknown automatic mode {bad or mode}. Choose one of: {', '.join(MODES)}"
                         f" (one for all structures, or one per structure).")
    return modes


def structure_logits(predictor: Predictor, head: AutoHead, modes, keep: bool = True
                     ) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Per-structure logits (S, H, W) on the image grid for each asked mode, and the objects."""
    if not predictor.is_image_set:
        raise NoImageError("No image is set: open an image before running automatic segmentation.")
    emb, size = predictor.embedding, predictor.backend.image_size
    lowres, dense_low = head.run(predictor)
    prob = 1.0 / (1.0 + np.exp(-lowres.astype(np.float32)))
    objects = find_objects(prob, emb, size)
    n = len(head.structures)
    stacks: dict[str, np.ndarray] = {}
    if "dense" in modes or "refine" in modes:
        dense = to_image(dense_low, emb, size)
        stacks["dense"] = dense
    if "refine" in modes:
        boxes = []
        for s in range(n):
            draft = merge_structures(dense[s : s + 1], [1], keep) > 0
            box = bbox(draft, BOX_MARGIN)
            if box is not None:
                boxes.append({"structure": s, "box": box, "score": 1.0})
        stacks["refine"] = _box_logits(predictor, boxes, n, keep=False, fallback=dense)
    if "box" in modes:
        stacks["box"] = _box_logits(predictor, objects, n, keep)
    return stacks, objects


def segment_embedding(predictor: Predictor, head: AutoHead, mode=None,
                      keep_largest: bool | None = None) -> AutoResult:
    """Segment every structure of the predictor's current image with `head`.

    Args:
        predictor: a predictor with an image (or embedding) set.
        head: the head to run (its base model must be the predictor's model).
        mode: "dense", "box" or "refine", a list with one per structure, or a dict
            {structure name: mode} (default: the head's own choice, made on validation data).
        keep_largest: keep one region per structure (default: the head's setting).
    """
    modes = resolve_modes(head, mode)
    keep = head.keep_largest if keep_largest is None else keep_largest
    stacks, objects = structure_logits(predictor, head, set(modes), keep)
    logits = np.stack([stacks[m][s] for s, m in enumerate(modes)])
    labels = merge_structures(logits, head.structures, keep)
    return AutoResult(labels=labels, logits=logits.astype(np.float32), objects=objects)


def _box_logits(predictor: Predictor, objects: list[dict], n: int, keep: bool,
                fallback: np.ndarray | None = None) -> np.ndarray:
    """Decode each object's box; per structure the max over its objects (-20, "no", when none)."""
    h, w = predictor.embedding.original_size
    logits = np.full((n, h, w), -20.0, dtype=np.float32) if fallback is None else fallback.copy()
    chosen: dict[int, list[dict]] = {}
    for obj in objects:
        chosen.setdefault(obj["structure"], []).append(obj)
    for s, objs in chosen.items():
        if keep:  # one object per structure: the most confident
            objs = [max(objs, key=lambda o: o.get("score", 0.0))]
        boxes = np.array([o["box"] for o in objs], dtype=np.float64)
        ok = (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)
        if not ok.any():
            continue
        pred = predictor.predict(box=boxes[ok], zoom=False)  # the heads' validated frame
        up = to_image(pred.low_res_logits, predictor.embedding, predictor.backend.image_size)
        logits[s] = up.max(axis=0)
    return logits
