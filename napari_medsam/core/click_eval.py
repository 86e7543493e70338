"""Click evaluation: Dice after 1, 3, 5 simulated clicks and NoC@85 / NoC@90 per target.

Each target is annotated the way `Session` does it: clicks one after the other (see
`clicks.next_click`: the most interior point of the object, then of the largest error region),
with the previous low-res logits fed back from the second click on. With `box=True` a box (the
eval's tight box grown by 5 pixels) is drawn first and the clicks refine it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator

import numpy as np

from .clicks import clicks_to_reach, next_click
from .errors import CancelledError
from .evaluation import BOX_MARGIN, Target, record
from .metrics import bbox, dice
from .predictor import Predictor

CLICK_COUNTS = (1, 3, 5)
NOC_THRESHOLDS = (0.85, 0.90)
NOC_CAP = 20


def click_dices(
    predictor: Predictor, truth: np.ndarray, max_clicks: int = NOC_CAP,
    box: np.ndarray | None = None, stop_at: float | None = max(NOC_THRESHOLDS),
    min_clicks: int = max(CLICK_COUNTS),
) -> list[float]:
    """Dice after each simulated click on the predictor's current image.

    Args:
        truth: bool mask on the image grid.
        box: draw this box first (box + clicks), else clicks only.
        stop_at, min_clicks: stop early once Dice >= stop_at after at least min_clicks clicks
            (the numbers reported are then known); None runs all `max_clicks`.
    """
    truth = np.asarray(truth, bool)
    pred, logits, window = None, None, None
    if box is not None:
        out = predictor.predict(box=box)
        pred, logits, window = out.masks[0], out.low_res_logits[0], out.window
    points: list[tuple[int, int]] = []
    labels: list[int] = []
    dices: list[float] = []
    for k in range(max_clicks):
        click = next_click(truth, pred)
        if click is None:  # exact: further clicks change nothing
            dices += [1.0] * (max(min_clicks, k + 1) - k)
            break
        points.append((click.x, click.y))
        labels.append(int(click.positive))
        out = predictor.predict(points=np.asarray(points, float), labels=np.asarray(labels),
                                box=box, mask_input=logits, window=window)
        pred, logits, window = out.masks[0], out.low_res_logits[0], out.window
        dices.append(dice(pred, truth))
        if stop_at is not None and k + 1 >= min_clicks and dices[-1] >= stop_at:
            break
    return dices


def evaluate_clicks(
    predictor: Predictor,
    targets: Iterator[Target],
    with_box: bool = False,
    max_clicks: int = NOC_CAP,
    progress: Callable[[int, Target], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> list[dict]:
    """Records {dataset, case, label, slice, prompt, dice, clicks, noc85, noc90} for 1/3/5 clicks.

    Each target gives one record per click count in CLICK_COUNTS; NoC values (clicks to reach
    85% / 90% Dice, NOC_CAP when never) are the same on the records of one target.
    """
    prompt = "box+clicks" if with_box else "clicks"
    records = []
    for i, t in enumerate(targets):
        if cancel is not None and cancel():
            raise CancelledError(f"Evaluation cancelled after {i} targets.")
        predictor.set_image(t.image, t.preset, t.bounds)
        box = bbox(t.truth, BOX_MARGIN) if with_box else None
        dices = click_dices(predictor, t.truth, max_clicks, box)
        nocs = {f"noc{round(th * 100)}": clicks_to_reach(dices, th, max_clicks)
                for th in NOC_THRESHOLDS}
        for k in CLICK_COUNTS:
            value = dices[min(k, len(dices)) - 1]
            records.append(record(t, prompt, value, clicks=k, **nocs))
        if progress is not None:
            progress(i + 1, t)
    return records


def summarize_clicks(records: list[dict]) -> dict[tuple[str, int, str], dict]:
    """Per (dataset, label, prompt): targets, mean Dice per click count, mean NoC85/NoC90."""
    groups: dict[tuple[str, int, str], list[dict]] = defaultdict(list)
    for r in records:
        if "clicks" in r:
            groups[(r["dataset"], r["label"], r["prompt"])].append(r)
    out = {}
    for key, rows in sorted(groups.items()):
        first = [r for r in rows if r["clicks"] == CLICK_COUNTS[0]]
        entry = {"n": len(first)}
        for k in CLICK_COUNTS:
            entry[f"dice@{k}"] = float(np.mean([r["dice"] for r in rows if r["clicks"] == k]))
        for th in NOC_THRESHOLDS:
            name = f"noc{round(th * 100)}"
            entry[name] = float(np.mean([r[name] for r in first]))
        out[key] = entry
    return out


def format_click_summary(records: list[dict]) -> str:
    cols = [f"dice@{k}" for k in CLICK_COUNTS] + [f"noc{round(t * 100)}" for t in NOC_THRESHOLDS]
    head = "".join(f"{c:>9}" for c in cols)
    lines = [f"{'dataset':<20}{'label':>6}  {'prompt':<11}{'n':>5}{head}"]
    for (ds, label, prompt), s in summarize_clicks(records).items():
        values = "".join(f"{s[c]:>9.3f}" if c.startswith("dice") else f"{s[c]:>9.2f}"
                         for c in cols)
        lines.append(f"{ds:<20}{label:>6}  {prompt:<11}{s['n']:>5}{values}")
    return "\n".join(lines)
