"""One-click automatic segmentation: small heads on the image embedding that prompt the decoder.

- heads.py: the two nn.Modules (ESP-MedSAM patch-prompt generator, TiPE-SAM shape experts).
- decoding.py: frozen decoder on head prompts; image <-> 256-grid geometry; separate objects.
- data.py: labelled examples (cached embedding + ground truth) from folders or arrays.
- train.py: the small two-phase training loop. evaluate.py: Dice per structure and mode.
- infer.py: run a head on the current image -> label map. store.py: save/load/find heads.
"""

from .data import Example, list_pairs, load_examples, make_example, pick_pairs
from .evaluate import evaluate_head, mean_dice
from .heads import KINDS, PatchPromptHead, ShapeExpertHead
from .infer import MODES, AutoHead, AutoResult, segment_embedding
from .store import list_heads, load_head, resolve_head, save_head
from .train import HeadTrainConfig, HeadTrainResult, train_head

__all__ = [
    "KINDS", "MODES", "AutoHead", "AutoResult", "Example", "PatchPromptHead", "ShapeExpertHead",
    "HeadTrainConfig", "HeadTrainResult", "evaluate_head", "list_heads", "list_pairs",
    "load_examples",
    "load_head", "make_example", "mean_dice", "pick_pairs", "resolve_head", "save_head",
    "segment_embedding", "train_head",
]
