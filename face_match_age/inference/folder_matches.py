"""infer.py --folder, second stage: matches found among the stored embeddings by blockwise cosine similarity
(inference/similarity_search.py), never by listing all pairs, and the tables that report them.

Memory is the embeddings (photos x 512 float32: 20 MB for 10,000 photos) plus one similarity tile and the
matches kept. A match is a similarity strictly above the threshold, as in pair mode; with a calibration the
threshold depends on each pair's predicted age gap, so the search keeps every pair above the calibration's
lowest threshold and each pair is then judged by its own.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from face_match_age.evaluation.calibration import CalibratedThreshold
from face_match_age.files.embedding_store import EmbeddingStore
from face_match_age.files.output_files import write_atomically
from face_match_age.inference.similarity_search import Matches, reference_matches, threshold_pairs, top_k

FACES_CSV, MATCHES_CSV = "faces.csv", "matches.csv"
FACE_COLUMNS = ["file", "box", "age", "uncertainty", "error"]
MATCH_COLUMNS = ["file_1", "file_2", "similarity", "threshold_used", "is_match", "age_1", "age_2", "age_gap"]


@dataclass
class Collection:
    """The listed photos as the store holds them: `records` (one per photo, in name order), `rows` (the
    records with a face) and `embeddings` (one row each, in the order of `rows`)."""

    records: list[dict]
    rows: list[dict]
    embeddings: np.ndarray

    def ages(self) -> np.ndarray:
        """The predicted age of each embedded photo, NaN where none was predicted."""
        return np.array([np.nan if row["age"] is None else row["age"] for row in self.rows], dtype=np.float64)


@dataclass
class JudgedMatches:
    """Pairs of embedded rows (`pairs.first`, `pairs.second`), the threshold each was judged by and the verdict."""

    pairs: Matches
    thresholds: np.ndarray
    is_match: np.ndarray

    def __len__(self) -> int:
        return len(self.thresholds)

    def only(self, keep: np.ndarray) -> JudgedMatches:
        return JudgedMatches(
            Matches(*(field[keep] for field in self.pairs)), self.thresholds[keep], self.is_match[keep]
        )


def load_collection(store: EmbeddingStore, names: Sequence[str]) -> Collection:
    """The records and embeddings of the photos `names` (a store may hold more: photos removed from the folder
    since, which are left out)."""
    wanted = set(names)
    records = sorted((record for record in store.table() if record["file"] in wanted), key=lambda r: r["file"])
    rows = [record for record in records if record["row"] is not None]
    return Collection(records, rows, store.rows([row["row"] for row in rows]))


def threshold_of(rule: float | CalibratedThreshold, age_gap: float | None) -> float:
    """The threshold a pair with this predicted age gap is judged by (a calibration's band, or the one number)."""
    return rule.choose(age_gap)[0] if isinstance(rule, CalibratedThreshold) else float(rule)


def lowest_threshold(rule: float | CalibratedThreshold) -> float:
    """The lowest threshold any pair can be judged by: what the search must keep."""
    if not isinstance(rule, CalibratedThreshold):
        return float(rule)
    bands = [band["threshold"] for band in rule.calibration["bands"].values() if band.get("threshold") is not None]
    return min([rule.calibration["overall"]["threshold"], *bands])


def collection_matches(collection: Collection, rule, k: int | None = None) -> JudgedMatches:
    """Every pair above its threshold (each pair once, first < second), or with `k` each photo's k most similar
    photos, matches or not (a pair can then appear from both sides)."""
    ages, embeddings = collection.ages(), collection.embeddings
    # disable=None: no progress bar when stderr is not a terminal (a log file)
    with tqdm(total=len(embeddings), unit="photo", desc="searching", disable=None) as bar:
        if k is None:
            found = judge(threshold_pairs(embeddings, lowest_threshold(rule), progress=bar.update), ages, ages, rule)
            return found.only(found.is_match)
        return judge(top_k(embeddings, k, progress=bar.update), ages, ages, rule)


def reference_search(
    collection: Collection, reference: np.ndarray, reference_age: float | None, rule, k: int | None = None
) -> tuple[np.ndarray, JudgedMatches]:
    """(the similarity of every embedded photo to the reference, the pairs reported: those above their
    threshold, or the k most similar). In the pairs `first` is 0 (the reference), `second` a photo's row."""
    similarities = collection.embeddings @ reference.astype(np.float32)
    lowest = None if k else lowest_threshold(rule)
    found = reference_matches(reference[None, :], collection.embeddings, threshold=lowest, k=k)
    reference_ages = np.array([np.nan if reference_age is None else reference_age])
    judged = judge(found, reference_ages, collection.ages(), rule)
    return similarities, judged if k else judged.only(judged.is_match)


def judge(pairs: Matches, ages_1: np.ndarray, ages_2: np.ndarray, rule) -> JudgedMatches:
    """Each pair's threshold (from the predicted age gap when `rule` is a calibration) and its verdict;
    `ages_1` and `ages_2` are indexed by the pairs' `first` and `second` rows (NaN: no age)."""
    gaps = np.abs(ages_1[pairs.first] - ages_2[pairs.second])
    if isinstance(rule, CalibratedThreshold):
        thresholds = np.array([threshold_of(rule, None if np.isnan(g) else float(g)) for g in gaps])
    else:
        thresholds = np.full(len(gaps), float(rule))
    return JudgedMatches(pairs, thresholds.astype(np.float64), pairs.similarity > thresholds)


def write_matches_csv(
    path: Path, matches: JudgedMatches, files_1: Sequence[str], files_2: Sequence[str], ages_1, ages_2
):
    """matches.csv, one row per pair, most similar first; `files_*`/`ages_*` map the pairs' rows to photos."""
    # By the similarity as written (4 decimals), then by photo: float noise (another batch composition, another
    # device) must not reorder pairs whose written similarities are equal.
    order = np.lexsort((matches.pairs.second, matches.pairs.first, -np.round(matches.pairs.similarity, 4)))

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(MATCH_COLUMNS)
            for index in order:
                i, j = matches.pairs.first[index], matches.pairs.second[index]
                gap = abs(ages_1[i] - ages_2[j])
                writer.writerow(
                    [
                        files_1[i],
                        files_2[j],
                        round(float(matches.pairs.similarity[index]), 4),
                        round(float(matches.thresholds[index]), 4),
                        bool(matches.is_match[index]),
                        _number(ages_1[i]),
                        _number(ages_2[j]),
                        _number(gap, 2),
                    ]
                )

    return write_atomically(path, write)


def write_faces_csv(path: Path, records: Sequence[dict], extra: dict[str, Sequence] | None = None) -> Path:
    """faces.csv, one row per photo (file, box, age, uncertainty, error) plus the `extra` columns (one value
    per record each, such as the cluster or the similarity to the reference)."""
    extra = extra or {}

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow([*FACE_COLUMNS, *extra])
            for index, record in enumerate(records):
                box = " ".join(map(str, record["box"])) if record.get("box") else ""
                values = [record["file"], box, record.get("age"), record.get("uncertainty"), record.get("error")]
                writer.writerow([*("" if v is None else v for v in values), *(_cell(c[index]) for c in extra.values())])

    return write_atomically(path, write)


def _number(value, digits: int = 2):
    return "" if value is None or np.isnan(value) else round(float(value), digits)


def _cell(value):
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return round(float(value), 4) if isinstance(value, (float, np.floating)) else value
