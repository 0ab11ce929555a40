"""The contact sheet of an infer.py batch (--pairs/--folder): the pairs' two faces side by side, matches first,
so a person scans a batch in a glance instead of reading results.csv.

The sheet is drawn from results.jsonl alone (plus the photos of the tiles shown), so a resumed batch ends with
the sheet of an uninterrupted one. Its size is bounded: at most MAX_TILES tiles, shared between matches,
non-matches and failed pairs (see sheet_rows), and at most two photos opened per tile, never the whole batch."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from face_match_age.detection.imaging import ImageLoadError, load_image
from face_match_age.inference.pair_specs import FAILED, MATCH, NO_MATCH, PairSpec, verdict
from face_match_age.reports.contact_sheet import MAX_TILES, Tile, save_contact_sheet, thumbnail

SHEET_NAME = "contact_sheet.jpg"
FRAMES = {MATCH: (46, 160, 67), NO_MATCH: (214, 39, 40), FAILED: (150, 150, 150)}


def save_batch_sheet(results: Path, pairs: Sequence[PairSpec]) -> Path:
    """Write the sheet of the rows in `results` (a finished results.jsonl) beside it; `pairs` give the photos'
    paths. A photo that cannot be opened any more leaves its face slot empty."""
    rows = [json.loads(line) for line in results.read_text(encoding="utf-8").split("\n") if line.strip()]
    counts = {outcome: sum(verdict(row) == outcome for row in rows) for outcome in FRAMES}
    title = f"{len(rows)} pairs: {counts[MATCH]} match, {counts[NO_MATCH]} no match, {counts[FAILED]} failed"
    paths = {pair.index: (pair.path1, pair.path2) for pair in pairs}
    return save_pair_sheet(rows, paths, results.with_name(SHEET_NAME), title)


def save_pair_sheet(rows: Sequence[dict], paths: dict, path: Path, title: str) -> Path:
    """The sheet of pair rows (infer.py's row layout: pair_index, file_1/2, face_1/2, verification, error)
    chosen by sheet_rows; `paths` maps each pair_index to its two photos' paths."""
    shown = sheet_rows(rows, MAX_TILES)
    faces = _face_thumbnails(shown, paths)
    tiles = [
        Tile(faces[row["pair_index"]], pair_caption(row, paths.get(row["pair_index"], ())), FRAMES[verdict(row)])
        for row in shown
    ]
    if len(shown) < len(rows):
        title += f" ({len(shown)} shown)"
    return save_contact_sheet(tiles, path, title, max_tiles=MAX_TILES)


def sheet_rows(rows: Sequence[dict], limit: int) -> list[dict]:
    """The rows a sheet shows, in its order: matches by similarity, highest first; then non-matches by
    similarity, highest first (the ones nearest the threshold, the likeliest missed matches); then failed pairs
    in the pairs' order. Past `limit` rows, each group keeps an equal share (a group with fewer rows passes
    the rest on), so a batch of many matches still shows its non-matches and failures."""
    groups: dict[str, list[dict]] = {outcome: [] for outcome in FRAMES}
    for row in rows:
        groups[verdict(row)].append(row)
    for outcome in (MATCH, NO_MATCH):
        # By the similarity as written (4 decimals): float noise (another batch of faces) must not reorder the sheet.
        groups[outcome].sort(key=lambda row: (-round(row["verification"]["similarity"], 4), row["pair_index"]))
    groups[FAILED].sort(key=lambda row: row["pair_index"])
    quotas = dict.fromkeys(groups, 0)
    while sum(quotas.values()) < limit and any(quotas[g] < len(groups[g]) for g in groups):
        for outcome in groups:  # one more row for each group that has one, in the sheet's order
            if quotas[outcome] < len(groups[outcome]) and sum(quotas.values()) < limit:
                quotas[outcome] += 1
    return [row for outcome, group in groups.items() for row in group[: quotas[outcome]]]


def _face_thumbnails(rows: Sequence[dict], paths: dict) -> dict[int, list[Image.Image | None]]:
    """pair_index -> its two face thumbnails: the detected face's box, the whole photo when no face was found,
    None when the photo cannot be opened. Each photo is opened once for all its tiles."""
    wanted: dict[Path | None, list[tuple[int, int, list | None]]] = {}  # None: a pair without its paths
    for row in rows:
        for slot, path in enumerate(paths.get(row["pair_index"], (None, None))):
            face = row.get(f"face_{slot + 1}") or {}
            wanted.setdefault(path, []).append((row["pair_index"], slot, face.get("box")))
    thumbnails: dict[int, list[Image.Image | None]] = {row["pair_index"]: [None, None] for row in rows}
    for path, uses in wanted.items():
        photo = _open(path)
        if photo is None:  # its tiles stay None
            continue
        for index, slot, box in uses:
            thumbnails[index][slot] = thumbnail(photo, box or None)
    return thumbnails


def _open(path: Path | None) -> Image.Image | None:
    if path is None:
        return None
    try:
        return load_image(path)  # the loader the batch used, so the boxes fit the same upright pixels
    except (ImageLoadError, OSError):
        return None


def pair_caption(row: dict, paths: Sequence[Path]) -> list[str]:
    names = f"{Path(row['file_1']).name} | {Path(row['file_2']).name}"
    verification = row.get("verification")
    if verification is None:
        error = row.get("error") or "no verification"
        for path in paths:  # the folder is the same for every row: the file name is what tells them apart
            error = error.replace(str(path), Path(path).name)
        outcome = f"failed: {error}"
    else:
        outcome = (
            f"{verdict(row)}: similarity {verification['similarity']:.3f} "
            f"(threshold {verification['threshold_used']:.2f})"
        )
    ages = [(row.get(f"face_{slot}") or {}).get("age") for slot in (1, 2)]
    age_line = "ages " + " / ".join("-" if age is None else f"{age:.0f}" for age in ages)
    if row.get("label") is not None:
        age_line += f"   label {row['label']}"
    return [names, outcome, age_line]
