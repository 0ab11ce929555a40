"""evaluate.py's contact sheets of the cases worth a look: the different-person pairs that scored highest
and the same-person pairs that scored lowest (verify), and the largest age errors (age). Each sheet shows
at most WORST_CASES tiles, so its size is bounded whatever the number of pairs or faces evaluated."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from face_match_age.detection.imaging import ImageLoadError, load_image
from face_match_age.match_rule import MatchRule
from face_match_age.reports.contact_sheet import Tile, save_contact_sheet, thumbnail

WORST_CASES = 24  # tiles per sheet: enough to see a pattern, few enough to look at each one
PAIR_COLUMNS = 4  # a pair tile holds two faces: 4 of them are as wide as 8 single faces
FACE_COLUMNS = 8
WRONG, RIGHT = (200, 30, 30), (150, 150, 150)  # frame of a tile the threshold decides wrongly, rightly


def worst_false_accepts(scores, labels, count: int = WORST_CASES) -> np.ndarray:
    """Positions of the `count` different-person pairs with the highest similarity, highest first (the
    false accepts, when any are above the threshold, come first); unscored pairs (NaN) are left out."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)
    return _ranked(-scores, ~labels & np.isfinite(scores), count)


def worst_false_rejects(scores, labels, count: int = WORST_CASES) -> np.ndarray:
    """Positions of the `count` same-person pairs with the lowest similarity, lowest first."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)
    return _ranked(scores, labels & np.isfinite(scores), count)


def largest_age_errors(true_ages, predicted, count: int = WORST_CASES) -> np.ndarray:
    """Positions of the `count` faces with the largest absolute age error, largest first."""
    errors = np.abs(np.asarray(predicted, dtype=np.float64) - np.asarray(true_ages, dtype=np.float64))
    return _ranked(-errors, np.isfinite(errors), count)


def _ranked(keys: np.ndarray, eligible: np.ndarray, count: int) -> np.ndarray:
    candidates = np.flatnonzero(eligible)
    # stable: of equal keys the earlier row comes first, so a rerun draws the same sheet
    return candidates[np.argsort(keys[candidates], kind="stable")[:count]]


def save_worst_pair_sheets(pairs: pd.DataFrame, threshold: float, out_dir: Path) -> dict[str, Path]:
    """Write worst_false_accepts.jpg (the different-person pairs scoring highest, highest first) and
    worst_false_rejects.jpg (the same-person pairs scoring lowest, lowest first), each tile framed in red
    where the threshold decides the pair wrongly. `pairs`: one row per pair with
    path1, path2 (photos), box1, box2 (the chosen faces, x1 y1 x2 y2, or None), age1, age2 (predicted,
    or None), score (NaN when a face was missing) and label (1 same person, 0 different)."""
    scores, labels = pairs["score"].to_numpy(dtype=np.float64), pairs["label"].to_numpy(dtype=bool)
    accepted = MatchRule(threshold).is_match(scores)
    sheets = {
        "worst_false_accepts": (
            worst_false_accepts(scores, labels, WORST_CASES),
            f"Worst false accepts: {int((accepted & ~labels).sum())} at threshold {threshold:g} (red)",
            "FALSE ACCEPT",
        ),
        "worst_false_rejects": (
            worst_false_rejects(scores, labels, WORST_CASES),
            (
                f"Worst false rejects: {int((~accepted & labels & np.isfinite(scores)).sum())} at threshold "
                f"{threshold:g} (red)"
            ),
            "FALSE REJECT",
        ),
    }
    written = {}
    for name, (positions, title, mistake) in sheets.items():
        tiles = [_pair_tile(pairs.iloc[position], threshold, mistake) for position in positions]
        written[name] = save_contact_sheet(tiles, out_dir / f"{name}.jpg", title, columns=PAIR_COLUMNS)
    return written


def _pair_tile(pair: pd.Series, threshold: float, mistake: str) -> Tile:
    wrong = MatchRule(threshold).is_match(pair["score"]) != bool(pair["label"])
    ages = [pair["age1"], pair["age2"]]
    if all(age is None or pd.isna(age) for age in ages):
        ages_line = "ages not predicted (no --ckpt)"
    else:
        ages_line = "predicted ages " + " / ".join(_age_text(age) for age in ages)
    return Tile(
        faces=[_face(pair["path1"], pair["box1"]), _face(pair["path2"], pair["box2"])],
        caption=[
            f"similarity {pair['score']:.3f}" + (f"  {mistake}" if wrong else ""),
            ages_line,
            f"{Path(pair['path1']).name} | {Path(pair['path2']).name}",
        ],
        frame=WRONG if wrong else RIGHT,
    )


def save_age_error_sheet(predictions: pd.DataFrame, images: Path, path: Path) -> Path:
    """Write the sheet of the largest age errors from `predictions` (name, age, predicted, age_std; the
    face crops are images/name)."""
    positions = largest_age_errors(predictions["age"], predictions["predicted"], WORST_CASES)
    tiles = []
    for position in positions:
        face = predictions.iloc[position]
        tiles.append(
            Tile(
                faces=[_face(Path(images) / face["name"], None)],
                caption=[
                    f"true {face['age']:g}",
                    f"pred {face['predicted']:.1f} ± {face['age_std']:.1f}",
                    str(face["name"]),
                ],
            )
        )
    title = f"Largest age errors of {len(predictions)} faces"
    return save_contact_sheet(tiles, path, title, columns=FACE_COLUMNS)


def _face(photo, box):
    """The thumbnail of `box` in `photo` (the whole photo without a box); None, drawn as an empty square,
    when the photo cannot be read any more (moved or deleted since it was scored)."""
    try:
        return thumbnail(load_image(Path(photo)), box)
    except (ImageLoadError, OSError):
        return None


def _age_text(age) -> str:
    return "?" if age is None or pd.isna(age) else f"{age:.0f}"
