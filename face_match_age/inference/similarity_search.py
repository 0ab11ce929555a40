"""Cosine-similarity search over many unit embeddings without ever building the N x N matrix or all pairs.

Similarities are computed one block x block tile at a time (torch matmul), and only what a caller keeps
(pairs above a threshold, or each row's k best) leaves the tile: memory is the embeddings themselves plus
one tile, so 100,000 photos need ~200 MB for their embeddings and ~70 MB for a 2048 x 2048 tile (its sums in
float64, its similarities in float32). The matches
kept cost 12 bytes each (two int32 rows and a float32 similarity): a folder where every pair matches, the
worst case, holds 50 million of them at 10,000 photos, 600 MB.
Similarities and comparisons are the match rule's (match_rule.cosine_similarities, in two steps, and
match_rule.above): a tile's similarity of two photos is the one pair mode computes for them, to the last bit
of its float32.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple

import numpy as np
import torch

from face_match_age.match_rule import above, unit_rows, unit_similarities

# 2048 x 2048: 32 MB of float64 sums and 16 MB of float32 similarities per tile, large enough for an efficient
# matmul, small next to the embeddings.
DEFAULT_BLOCK = 2048
Progress = Callable[[int], object]  # progress(rows): called as each block of rows is done; what it returns is unused


class Matches(NamedTuple):
    """Parallel arrays, one entry per match, sorted by `first` then `second`: `first` indexes the rows (or
    the queries in reference mode), `second` the rows matched (both int32), `similarity` their cosine
    similarity (float32)."""

    first: np.ndarray
    second: np.ndarray
    similarity: np.ndarray


def threshold_pairs(
    embeddings: np.ndarray, threshold: float, block: int = DEFAULT_BLOCK, progress: Progress | None = None
) -> Matches:
    """Every pair of rows i < j of `embeddings` (N x D unit vectors, in memory or a memory-mapped .npy)
    whose cosine similarity is above `threshold`. Only tiles on or above the diagonal are computed.
    `progress(rows)` is called as each block of rows is done (e.g. to advance a progress bar; the later
    blocks go faster, as they have fewer tiles above the diagonal)."""
    _check(embeddings, block)
    found = []
    for rows in _spans(len(embeddings), block):
        left = _tile(embeddings, rows)
        in_rows = []
        for columns in _spans(len(embeddings), block, start=rows.start):
            similarity = unit_similarities(left, _tile(embeddings, columns))
            if columns.start == rows.start:  # the diagonal tile: keep only j > i
                similarity = similarity.masked_fill(~_strictly_upper(similarity.shape), -torch.inf)
            in_rows.append(_above(similarity, threshold, rows.start, columns.start))
        # Sorted one block of rows at a time: the blocks follow each other, so their concatenation is sorted,
        # and the sort's index array never spans all the matches.
        found.append(_sorted(in_rows))
        if progress is not None:
            progress(len(rows))
    return _joined(found)


def top_k(
    embeddings: np.ndarray,
    k: int,
    threshold: float | None = None,
    block: int = DEFAULT_BLOCK,
    progress: Progress | None = None,
) -> Matches:
    """Each row's `k` most similar other rows (fewer when N - 1 < k), only those above `threshold` if given."""
    return _best(embeddings, embeddings, k, threshold, block, exclude_self=True, progress=progress)


def reference_matches(
    queries: np.ndarray,
    embeddings: np.ndarray,
    threshold: float | None = None,
    k: int | None = None,
    block: int = DEFAULT_BLOCK,
) -> Matches:
    """The rows of `embeddings` matching each of a few `queries` (Q x D): all those above `threshold`,
    or each query's `k` best (above `threshold` if also given). `first` indexes the queries."""
    if k is not None:
        return _best(queries, embeddings, k, threshold, block, exclude_self=False)
    if threshold is None:
        raise ValueError("reference_matches needs a threshold, k or both")
    _check(queries, block)
    _check(embeddings, block)
    found = []
    for rows in _spans(len(queries), block):
        left = _tile(queries, rows)
        for columns in _spans(len(embeddings), block):
            similarity = unit_similarities(left, _tile(embeddings, columns))
            found.append(_above(similarity, threshold, rows.start, columns.start))
    return _sorted(found)


def reference_similarities(query: np.ndarray, embeddings: np.ndarray, block: int = DEFAULT_BLOCK) -> np.ndarray:
    """The similarity of one `query` embedding (D) to every row of `embeddings`, float32, a block at a time."""
    _check(embeddings, block)
    row = unit_rows(np.asarray(query, dtype=np.float32)[None, :])
    parts = [unit_similarities(row, _tile(embeddings, span))[0].numpy() for span in _spans(len(embeddings), block)]
    return np.concatenate([np.zeros(0, dtype=np.float32), *parts])


def _best(
    queries: np.ndarray,
    embeddings: np.ndarray,
    k: int,
    threshold: float | None,
    block: int,
    exclude_self: bool,
    progress: Progress | None = None,
) -> Matches:
    """Top-k by a running merge: each tile's scores join the k kept so far, so memory stays block x (block + k)."""
    _check(queries, block)
    _check(embeddings, block)
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    found = []
    for rows in _spans(len(queries), block):
        left = _tile(queries, rows)
        kept_scores = torch.full((len(left), 0), -torch.inf)
        kept_columns = torch.zeros((len(left), 0), dtype=torch.long)
        for columns in _spans(len(embeddings), block):
            similarity = unit_similarities(left, _tile(embeddings, columns))
            if exclude_self:
                similarity = _without_self(similarity, rows.start, columns.start)
            scores = torch.cat([kept_scores, similarity], dim=1)
            indices = torch.cat([kept_columns, torch.arange(columns.start, columns.stop).expand(len(left), -1)], dim=1)
            kept_scores, order = scores.topk(min(k, scores.shape[1]), dim=1)
            kept_columns = indices.gather(1, order)
        found.append(_kept(kept_scores, kept_columns, rows.start, threshold))
        if progress is not None:
            progress(len(rows))
    return _sorted(found)


def _kept(scores: torch.Tensor, columns: torch.Tensor, row_start: int, threshold: float | None) -> Matches:
    # -inf marks a row's own score (or no score at all): never a neighbour.
    keep = scores > -torch.inf if threshold is None else above(scores, threshold)
    rows = torch.arange(row_start, row_start + len(scores)).unsqueeze(1).expand_as(scores)
    return _matches(rows[keep].numpy(), columns[keep].numpy(), scores[keep].numpy())


def _check(embeddings: np.ndarray, block: int) -> None:
    if np.ndim(embeddings) != 2:
        raise ValueError(f"embeddings must be a 2-D array (rows x dimensions), not shape {np.shape(embeddings)}")
    if block < 1:
        raise ValueError(f"block must be at least 1, not {block}")


def _spans(count: int, block: int, start: int = 0) -> Iterator[range]:
    for first in range(start, count, block):
        yield range(first, min(first + block, count))


def _tile(embeddings: np.ndarray, span: range) -> torch.Tensor:
    """The rows of `span` as the match rule's float64 unit vectors (a copy: a memory-mapped .npy is read-only)."""
    return unit_rows(embeddings[span.start : span.stop])


def _strictly_upper(shape: torch.Size) -> torch.Tensor:
    return torch.ones(shape, dtype=torch.bool).triu(diagonal=1)


def _without_self(similarity: torch.Tensor, row_start: int, column_start: int) -> torch.Tensor:
    rows = torch.arange(row_start, row_start + similarity.shape[0]).unsqueeze(1)
    columns = torch.arange(column_start, column_start + similarity.shape[1]).unsqueeze(0)
    return similarity.masked_fill(rows == columns, -torch.inf)


def _above(similarity: torch.Tensor, threshold: float, row_start: int, column_start: int) -> Matches:
    # numpy, not torch.nonzero: its results on CPU are views of a buffer sized for the whole tile, which
    # every tile's kept matches would hold on to (measured: 1.8 GB more at 30,000 rows, 9 GB at 100,000).
    tile = similarity.numpy()
    rows, columns = np.nonzero(above(tile, threshold))
    return _matches(rows + row_start, columns + column_start, tile[rows, columns])


def _matches(first: np.ndarray, second: np.ndarray, similarity: np.ndarray) -> Matches:
    """Matches in their compact types. int32 rows: a folder of 2**31 photos is far beyond any other limit."""
    return Matches(first.astype(np.int32), second.astype(np.int32), similarity.astype(np.float32))


def _sorted(parts: list[Matches]) -> Matches:
    joined = _joined(parts)
    order = np.lexsort((joined.second, joined.first))
    return Matches(*(field[order] for field in joined))


def _joined(parts: list[Matches]) -> Matches:
    """The parts one after the other, gathered one field at a time and emptying `parts`, so that at most one
    field is held twice (with every pair a match, 10,000 photos give 600 MB of matches, not 1.2 GB)."""
    if not parts:
        return _matches(np.zeros(0), np.zeros(0), np.zeros(0))
    fields = [list(field) for field in zip(*parts, strict=True)]
    parts.clear()
    joined = []
    for field in fields:
        joined.append(np.concatenate(field))
        field.clear()
    return Matches(*joined)
