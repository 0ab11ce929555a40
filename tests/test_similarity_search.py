"""Blockwise similarity search finds exactly what a brute-force all-pairs computation finds."""

import itertools

import numpy as np
import pytest

from face_match_age.inference.similarity_search import reference_matches, threshold_pairs, top_k

BLOCKS = (7, 64, 128, 300, 1000)  # 7, 64 and 128 do not divide 300


def _unit(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def planted() -> np.ndarray:
    """300 random unit vectors, the last 30 noisy copies of the first 30 at cosine ~0.9, ~0.8 and ~0.7."""
    rng = np.random.default_rng(0)
    base = _unit(rng.standard_normal((270, 512)))
    noise = _unit(rng.standard_normal((30, 512)))
    closeness = np.repeat([0.9, 0.8, 0.7], 10)[:, None]
    copies = _unit(closeness * base[:30] + np.sqrt(1 - closeness**2) * noise)
    return np.concatenate([base, copies])


def _brute_force_pairs(embeddings: np.ndarray, threshold: float) -> list[tuple[int, int, float]]:
    similarity = embeddings.astype(np.float64) @ embeddings.astype(np.float64).T
    first, second = np.nonzero(np.triu(similarity > threshold, k=1))
    return [(int(i), int(j), float(similarity[i, j])) for i, j in zip(first, second, strict=True)]


def _thresholds_between_pairs(embeddings: np.ndarray) -> list[float]:
    """Thresholds midway between neighbouring similarities of the planted pairs: no pair sits on one."""
    similarity = embeddings.astype(np.float64) @ embeddings.astype(np.float64).T
    planted = np.sort(np.diagonal(similarity[:30, 270:]))
    return [float((low + high) / 2) for low, high in itertools.pairwise(planted)][::7] + [0.1, 0.99]


@pytest.mark.parametrize("block", BLOCKS)
def test_threshold_pairs_equal_brute_force_for_every_block_size(planted, block):
    for threshold in _thresholds_between_pairs(planted):
        expected = _brute_force_pairs(planted, threshold)
        found = threshold_pairs(planted, threshold, block=block)
        assert list(zip(found.first.tolist(), found.second.tolist(), strict=True)) == [(i, j) for i, j, _ in expected]
        np.testing.assert_allclose(found.similarity, [s for _, _, s in expected], atol=1e-6)


def test_threshold_pairs_find_every_planted_copy(planted):
    found = threshold_pairs(planted, 0.5, block=64)
    assert set(zip(found.first.tolist(), found.second.tolist(), strict=True)) == {(i, 270 + i) for i in range(30)}


def test_a_pair_exactly_at_the_threshold_is_not_a_match():
    embeddings = np.array([[1.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    assert len(threshold_pairs(embeddings, 1.0).first) == 0


def test_threshold_pairs_read_a_memory_mapped_file(planted, tmp_path):
    np.save(tmp_path / "embeddings.npy", planted)
    mapped = np.load(tmp_path / "embeddings.npy", mmap_mode="r")
    found = threshold_pairs(mapped, 0.5, block=64)
    assert found.second.tolist() == list(range(270, 300))


@pytest.mark.parametrize("block", BLOCKS)
def test_top_k_equals_brute_force(planted, block):
    similarity = planted.astype(np.float64) @ planted.astype(np.float64).T
    np.fill_diagonal(similarity, -np.inf)
    best = np.argsort(-similarity, axis=1)[:, :5]
    found = top_k(planted, 5, block=block)
    assert found.first.tolist() == np.repeat(np.arange(300), 5).tolist()
    assert found.second.tolist() == np.sort(best, axis=1).ravel().tolist()
    np.testing.assert_allclose(found.similarity, similarity[found.first, found.second], atol=1e-6)


def test_top_k_with_a_threshold_keeps_only_the_planted_copies(planted):
    found = top_k(planted, 3, threshold=0.5, block=64)
    expected = sorted([(i, 270 + i) for i in range(30)] + [(270 + i, i) for i in range(30)])
    assert list(zip(found.first.tolist(), found.second.tolist(), strict=True)) == expected


def test_top_k_larger_than_the_rows_returns_every_other_row():
    embeddings = _unit(np.random.default_rng(1).standard_normal((4, 8)))
    found = top_k(embeddings, 10, block=3)
    assert len(found.first) == 12
    assert not np.any(found.first == found.second)


def test_reference_matches_find_each_querys_copy(planted):
    found = reference_matches(planted[:3], planted, threshold=0.5, block=64)
    assert list(zip(found.first.tolist(), found.second.tolist(), strict=True)) == [
        (0, 0), (0, 270), (1, 1), (1, 271), (2, 2), (2, 272)
    ]  # fmt: skip


def test_reference_matches_top_k_ranks_the_whole_collection(planted):
    found = reference_matches(planted[270:271], planted, k=2, block=64)
    assert found.second.tolist() == [0, 270]


def test_empty_input_gives_no_matches():
    empty = np.zeros((0, 512), dtype=np.float32)
    assert len(threshold_pairs(empty, 0.5).first) == 0
    assert len(top_k(empty, 3).first) == 0


def test_one_row_has_no_pair_and_no_neighbour():
    one = _unit(np.ones((1, 512)))
    assert len(threshold_pairs(one, -1.0).first) == 0
    assert len(top_k(one, 3).first) == 0


def test_a_one_dimensional_array_is_refused_with_its_shape():
    with pytest.raises(ValueError, match=r"2-D array .*\(512,\)"):
        threshold_pairs(np.zeros(512, dtype=np.float32), 0.5)


def test_progress_counts_every_row_once():
    rng = np.random.default_rng(3)
    embeddings = rng.standard_normal((10, 8)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    for search in (
        lambda report: threshold_pairs(embeddings, 0.5, block=3, progress=report),
        lambda report: top_k(embeddings, 2, block=3, progress=report),
    ):
        reported = []
        search(reported.append)
        assert reported == [3, 3, 3, 1]
