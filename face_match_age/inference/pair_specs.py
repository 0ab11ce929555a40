"""The pairs of a batch and what became of each: the pairs CSV read into PairSpecs (infer.py --pairs,
evaluate.py verify), and the verdict of a results row (match, no match, failed) that the batch's count, its
contact sheet and its summary line share."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MATCH, NO_MATCH, FAILED = "match", "no match", "failed"


class InputError(ValueError):
    """A pairs CSV that cannot be used."""


@dataclass(frozen=True)
class PairSpec:
    img1: str  # as written by the user (for the results)
    img2: str
    path1: Path  # resolved, for reading and de-duplication
    path2: Path
    label: object = None
    index: int = 0  # row of the pairs CSV, so results can be joined back


def read_pairs_csv(csv_path: Path, columns: dict[str, str] | None = None) -> list[PairSpec]:
    """Pairs from a CSV with columns img1, img2 (and optionally label), or the file's own names for them
    that `columns` maps (read_table); relative paths are taken from the CSV's own folder."""
    # here, not at the top: pair mode should not pay pandas' import time
    from face_match_age.files.csv_tables import read_table

    table = read_table(
        csv_path,
        ("img1", "img2"),
        InputError,
        "pairs file",
        columns=columns,
        dtype={"img1": str, "img2": str},
        keep_default_na=False,
    )
    base = csv_path.resolve().parent
    labels = table["label"].tolist() if "label" in table.columns else [None] * len(table)
    return [
        PairSpec(a, b, _resolve(base, a), _resolve(base, b), _plain(label), index)
        for index, (a, b, label) in enumerate(zip(table["img1"], table["img2"], labels))
    ]


def verdict(row: dict) -> str:
    """match, no match or failed (no verification: a photo or a face was missing) of a results row."""
    if row.get("verification") is None:
        return FAILED
    return MATCH if row["verification"]["is_match"] else NO_MATCH


def _resolve(base: Path, text: str) -> Path:
    path = Path(text).expanduser()
    return (path if path.is_absolute() else base / path).resolve()


def _plain(label):
    """CSV labels as JSON-friendly values: 1 and 0 as ints, empty as None."""
    if label is None or label == "":
        return None
    try:
        return int(label)
    except (TypeError, ValueError):
        return label
