"""infer.py --folder, second stage: matches found among the stored embeddings by blockwise cosine similarity
(inference/similarity_search.py), never by listing all pairs, and the tables that report them.

Memory is the embeddings (photos x 512 float32: 20 MB for 10,000 photos) plus one similarity tile and the
matches kept. Each pair is judged by the match rule of pair mode (match_rule.MatchRule); with a calibration
the threshold depends on each pair's predicted age gap, so the search keeps every pair above the rule's
lowest threshold and each pair is then judged by its own.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from face_match_age.files.embedding_store import EmbeddingStore
from face_match_age.files.output_files import write_atomically
from face_match_age.inference.records import FACES_CSV_COLUMNS, MATCHES_CSV_COLUMNS, cell, column_field, table_row
from face_match_age.inference.similarity_search import (
    Matches,
    reference_matches,
    reference_similarities,
    threshold_pairs,
    top_k,
)
from face_match_age.match_rule import MatchRule
from face_match_age.memory import release_freed_memory

FACES_CSV, MATCHES_CSV = "faces.csv", "matches.csv"
ROWS_PER_WRITE = 1 << 18  # matches.csv rows converted and written at a time: ~50 MB of Python objects
PAIRS_PER_SLICE = 1 << 22  # pairs put in order at a time: 32 MB of indices


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


def collection_matches(collection: Collection, rule: MatchRule, k: int | None = None) -> JudgedMatches:
    """Every pair above its threshold (each pair once, first < second), or with `k` each photo's k most similar
    photos, matches or not (a pair can then appear from both sides)."""
    ages, embeddings = collection.ages(), collection.embeddings
    # disable=None: no progress bar when stderr is not a terminal (a log file)
    with tqdm(total=len(embeddings), unit="photo", desc="searching", disable=None) as bar:
        if k is None:
            pairs = threshold_pairs(embeddings, rule.lowest, progress=bar.update)
            release_freed_memory()  # the tiles' parts: as large as the matches kept, in blocks glibc keeps
            found = judge(pairs, ages, ages, rule)
            # With one threshold every pair found is a match: no copy of what may be millions of them.
            return found if found.is_match.all() else found.only(found.is_match)
        return judge(top_k(embeddings, k, progress=bar.update), ages, ages, rule)


def reference_search(
    collection: Collection, reference: np.ndarray, reference_age: float | None, rule: MatchRule, k: int | None = None
) -> tuple[np.ndarray, JudgedMatches]:
    """(the similarity of every embedded photo to the reference, the pairs reported: those above their
    threshold, or the k most similar). In the pairs `first` is 0 (the reference), `second` a photo's row."""
    similarities = reference_similarities(reference, collection.embeddings)
    lowest = None if k else rule.lowest
    found = reference_matches(reference[None, :], collection.embeddings, threshold=lowest, k=k)
    reference_ages = np.array([np.nan if reference_age is None else reference_age])
    judged = judge(found, reference_ages, collection.ages(), rule)
    return similarities, judged if k else judged.only(judged.is_match)


def judge(pairs: Matches, ages_1: np.ndarray, ages_2: np.ndarray, rule: MatchRule) -> JudgedMatches:
    """Each pair's verdict and the threshold it was judged by (from its predicted age gap when the rule is
    calibrated); `ages_1` and `ages_2` are indexed by the pairs' `first` and `second` rows (NaN: no age)."""
    gaps = ages_1[pairs.first] - ages_2[pairs.second] if rule.by_age_gap else None  # 8 bytes a pair: only if used
    is_match, thresholds = rule.judge(pairs.similarity, gaps)
    # A fixed threshold is one number for every pair: a read-only view that takes no memory, however many pairs
    # there are; per pair, float32 (4 bytes a pair).
    return JudgedMatches(pairs, np.broadcast_to(np.float32(thresholds), pairs.similarity.shape), is_match)


def write_matches_csv(
    path: Path, matches: JudgedMatches, files_1: Sequence[str], files_2: Sequence[str], ages_1, ages_2
):
    """matches.csv, one row per pair, most similar first; `files_*`/`ages_*` map the pairs' rows to photos.
    Written ROWS_PER_WRITE rows at a time, each column converted by numpy: every pair of 10,000 photos of one
    person is 50 million rows."""
    names_1, names_2 = np.asarray(files_1, dtype=object), np.asarray(files_2, dtype=object)
    ages_1, ages_2 = np.asarray(ages_1, dtype=np.float64), np.asarray(ages_2, dtype=np.float64)

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(MATCHES_CSV_COLUMNS)
            for order in most_similar_first(matches.pairs.similarity):
                for start in range(0, len(order), ROWS_PER_WRITE):
                    chosen = order[start : start + ROWS_PER_WRITE]
                    first, second = matches.pairs.first[chosen], matches.pairs.second[chosen]
                    age_1, age_2 = ages_1[first], ages_2[second]
                    columns = [
                        names_1[first].tolist(),
                        names_2[second].tolist(),
                        _rounded(matches.pairs.similarity[chosen], "similarity"),
                        _rounded(matches.thresholds[chosen], "threshold_used"),
                        matches.is_match[chosen].tolist(),
                        _rounded(age_1, "age_1"),
                        _rounded(age_2, "age_2"),
                        _rounded(np.abs(age_1 - age_2), "age_gap"),
                    ]
                    writer.writerows(zip(*columns, strict=True))
                release_freed_memory()  # the slice's rows, millions of Python objects

    return write_atomically(path, write)


def most_similar_first(similarity: np.ndarray, per_slice: int = PAIRS_PER_SLICE) -> Iterator[np.ndarray]:
    """The indices of the pairs ordered by their similarity as written (4 decimals), highest first, equals in
    their given order (pairs come sorted by photo), in slices of about `per_slice` (more where one value is
    shared by more pairs).

    Ordered by the written value, not the float: float noise (another batch composition, another device) must
    not reorder pairs whose written similarities are equal. In slices, not one argsort: its index array is 8
    bytes a pair, 400 MB for the 50 million pairs of 10,000 photos of one person; here the only array over
    every pair is its 2-byte written value, and each slice is gathered in one pass."""
    written = np.empty(len(similarity), dtype=np.int16)  # similarity x 10,000 in [-10,000, 10,000]
    counts = np.zeros(20_001, dtype=np.int64)  # pairs of each written value, from -1 up
    for start in range(0, len(similarity), PAIRS_PER_SLICE):
        part = np.rint(np.asarray(similarity[start : start + PAIRS_PER_SLICE], dtype=np.float64) * 10_000)
        written[start : start + len(part)] = part  # np.round(similarity, 4)'s own integers
        counts += np.bincount(part.astype(np.int64) + 10_000, minlength=20_001)
    counts = counts[::-1]  # highest value first
    highest, taken = 10_000, 0
    for value, total in zip(range(10_000, -10_001, -1), np.cumsum(counts), strict=True):
        if total - taken >= per_slice or value == -10_000:
            if total > taken:
                chosen = np.flatnonzero((written >= value) & (written <= highest))
                yield chosen[np.argsort(-written[chosen].astype(np.int32), kind="stable")]
            highest, taken = value - 1, total


def _rounded(values: np.ndarray, column: str) -> list:
    """`values` rounded to the digits of `column` (records.column_field) as Python floats (their shortest form:
    0.7, not 0.699999988), "" for NaN: records.cell for a whole column at once."""
    digits = column_field(column)[1]
    if digits is None:  # a caller's mistake: only columns with digits are rounded
        raise ValueError(f"{column} is not a rounded column")
    rounded = np.round(np.asarray(values, dtype=np.float64), digits).tolist()
    return [("" if value != value else value) for value in rounded]  # value != value: NaN


def write_faces_csv(path: Path, records: Sequence[dict], extra: Mapping[str, Sequence] | None = None) -> Path:
    """faces.csv, one row per photo (records.FACES_CSV_COLUMNS: file, its face's fields, error) plus the `extra`
    columns (one value per record each: records.FACES_CSV_EXTRA, the cluster or the similarity to the reference)."""
    extra = extra or {}

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow([*FACES_CSV_COLUMNS, *extra])
            for index, record in enumerate(records):
                extras = [cell(name, _plain(column[index])) for name, column in extra.items()]
                writer.writerow([*table_row(FACES_CSV_COLUMNS, record), *extras])

    return write_atomically(path, write)


def _plain(value):
    """A numpy number as Python's, which `cell` rounds."""
    return float(value) if isinstance(value, np.floating) else value
