"""The folder run's tables at scale: matches.csv written in slices equals one written at once, most similar
first with ties by photo, and the contact sheet's pairs are the strongest ones, chosen without a full sort."""

import csv

import numpy as np
import pytest

from face_match_age.inference import folder_matches, folder_run
from face_match_age.inference.folder_matches import JudgedMatches, most_similar_first, write_matches_csv
from face_match_age.inference.folder_run import _most_similar
from face_match_age.inference.records import MATCHES_CSV_COLUMNS
from face_match_age.inference.similarity_search import Matches, threshold_pairs

FILES = [f"photo_{index}.jpg" for index in range(6)]
AGES = np.array([20.0, 31.5, np.nan, 44.25, 60.0, 8.0])


def _judged() -> JudgedMatches:
    """Seven pairs, sorted by photo as the search gives them, with two similarities equal at 4 decimals."""
    first = np.array([0, 0, 1, 1, 2, 3, 4], dtype=np.int32)
    second = np.array([1, 5, 2, 4, 3, 5, 5], dtype=np.int32)
    similarity = np.array([0.81, 0.93, 0.7500004, 0.99, 0.7500001, 0.88, 0.6], dtype=np.float32)
    thresholds = np.full(7, 0.7, dtype=np.float32)
    return JudgedMatches(Matches(first, second, similarity), thresholds, similarity > thresholds)


def _rows(path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def test_matches_csv_is_most_similar_first_with_ties_by_photo(tmp_path):
    rows = _rows(write_matches_csv(tmp_path / "matches.csv", _judged(), FILES, FILES, AGES, AGES))
    assert rows[0] == list(MATCHES_CSV_COLUMNS)
    assert [(row[0], row[1]) for row in rows[1:]] == [
        ("photo_1.jpg", "photo_4.jpg"),
        ("photo_0.jpg", "photo_5.jpg"),
        ("photo_3.jpg", "photo_5.jpg"),
        ("photo_0.jpg", "photo_1.jpg"),
        ("photo_1.jpg", "photo_2.jpg"),  # 0.75 both: the earlier photo first
        ("photo_2.jpg", "photo_3.jpg"),
        ("photo_4.jpg", "photo_5.jpg"),
    ]
    # Short decimals, not float32 noise; an unknown age leaves its cells and the gap empty.
    assert rows[1] == ["photo_1.jpg", "photo_4.jpg", "0.99", "0.7", "True", "31.5", "60.0", "28.5"]
    assert rows[5] == ["photo_1.jpg", "photo_2.jpg", "0.75", "0.7", "True", "31.5", "", ""]
    assert rows[7][4] == "False"


@pytest.mark.parametrize("slice_rows", [1, 2, 3, 7])
def test_matches_csv_written_in_slices_equals_one_written_at_once(tmp_path, monkeypatch, slice_rows):
    whole = _rows(write_matches_csv(tmp_path / "whole.csv", _judged(), FILES, FILES, AGES, AGES))
    monkeypatch.setattr(folder_matches, "ROWS_PER_WRITE", slice_rows)
    assert _rows(write_matches_csv(tmp_path / "sliced.csv", _judged(), FILES, FILES, AGES, AGES)) == whole


def test_the_search_keeps_matches_in_compact_types():
    rng = np.random.default_rng(1)
    embeddings = rng.standard_normal((50, 16)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    found = threshold_pairs(embeddings, 0.0, block=7)
    assert len(found.first) > 100
    assert (found.first.dtype, found.second.dtype, found.similarity.dtype) == (np.int32, np.int32, np.float32)


@pytest.mark.parametrize("count", [1, 3, 10, 50])
@pytest.mark.parametrize("per_slice", [7, 1 << 22])
def test_the_sheets_pairs_are_the_strongest_with_ties_by_index(monkeypatch, count, per_slice):
    monkeypatch.setattr(folder_run, "PAIRS_PER_SLICE", per_slice)
    rng = np.random.default_rng(2)
    similarity = np.round(rng.uniform(0.5, 1.0, 400), 2).astype(np.float32)  # many ties
    among = rng.random(400) < 0.6
    candidates = np.flatnonzero(among)
    expected = sorted(candidates.tolist(), key=lambda index: (-similarity[index], index))[:count]
    assert _most_similar(similarity, among, count) == expected


def test_the_sheet_takes_no_pair_from_outside_its_group():
    similarity = np.array([0.9, 0.8, 0.7], dtype=np.float32)
    assert _most_similar(similarity, np.array([False, True, True]), 5) == [1, 2]
    assert _most_similar(similarity, np.zeros(3, dtype=bool), 5) == []


@pytest.mark.parametrize("per_slice", [1, 7, 100, 10_000])
def test_pairs_come_in_order_of_their_written_similarity_in_slices(per_slice):
    rng = np.random.default_rng(4)
    # Negative ones too (--top-k keeps non-matches), values a hair either side of a 4-decimal boundary, ties.
    similarity = np.concatenate([rng.uniform(-1, 1, 300), [0.75005, 0.7500499, 0.7501, 0.7501, -1.0, 1.0]])
    similarity = similarity.astype(np.float32)
    slices = list(most_similar_first(similarity, per_slice))
    written = np.round(similarity.astype(np.float64), 4)
    expected = np.lexsort((np.arange(len(similarity)), -written))
    assert np.concatenate(slices).tolist() == expected.tolist()
    assert max(map(len, slices)) <= per_slice - 1 + np.unique(written, return_counts=True)[1].max()
    assert len(slices) >= min(len(similarity) // per_slice, len(np.unique(written)))
