"""Retrieval metrics on plain arrays: each query ranks a gallery by cosine similarity; average precision,
mean average precision (MAP) and rank-k accuracy (CMC) follow from where the query's identity appears.

Ties: the gallery is sorted by similarity with a stable sort, so equally similar items keep their gallery
order (the lower gallery index ranks first). The result is the same on every run and every machine.
A query whose identity is absent from the gallery has nothing to find: it is skipped and counted, not
scored 0 (that would measure the gallery's make-up, not the embedding). A query whose gallery holds
nobody else has nothing to rank its person above: any embedding scores it 1.0, so it is skipped and
counted too. Beside each rank-k accuracy, its chance level: what a random ranking of the same galleries gets.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

RANKS = (1, 5)  # the rank-k accuracies reported: rank-1 is identification, rank-5 a short list to check
BLOCK_CELLS = 2**22  # query x gallery cells ranked at once: ~32 MB per 8-byte array, whatever the gallery size


@dataclass
class QueryScores:
    """Per query: its average precision and the 1-based rank of its first correct gallery item (NaN / 0
    for a skipped query), how many gallery items are its person, and the gallery's size."""

    average_precision: np.ndarray  # float64, NaN where skipped
    first_hit_rank: np.ndarray  # int64, 0 where skipped
    correct: np.ndarray  # int64: gallery items of the query's person
    gallery_size: np.ndarray  # int64

    @property
    def scored(self) -> np.ndarray:
        """Queries with something to find and someone else to rank it above (see the module's notes)."""
        return (self.correct > 0) & (self.correct < self.gallery_size)

    def chance_rank(self, k: int) -> np.ndarray:
        """Per query, the chance that a random ranking puts one of its `correct` items in the first k:
        1 - C(gallery - correct, k) / C(gallery, k)."""
        misses = np.ones(len(self.correct))
        for i in range(k):
            others = np.clip(self.gallery_size - self.correct - i, 0, None)
            misses *= np.where(self.gallery_size - i > 0, others / np.maximum(self.gallery_size - i, 1), 0.0)
        return 1 - misses


def unit_rows(embeddings) -> np.ndarray:
    """Embeddings as float32 rows of length 1, so a matrix product gives cosine similarities."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    return embeddings / np.where(norms > 0, norms, 1)


def score_queries(query_embeddings, query_ids, gallery_embeddings, gallery_ids, block: int | None = None):
    """QueryScores of each query against the whole gallery, ranked by cosine similarity. Memory: one
    block of queries x the gallery at a time (default: BLOCK_CELLS worth of queries). Identities may be
    any comparable values; integer codes compare fastest."""
    queries, gallery = unit_rows(query_embeddings), unit_rows(gallery_embeddings)
    query_ids, gallery_ids = np.asarray(query_ids), np.asarray(gallery_ids)
    precision, first_hit = np.full(len(queries), np.nan), np.zeros(len(queries), dtype=np.int64)
    correct = np.zeros(len(queries), dtype=np.int64)
    ranks = np.arange(1, len(gallery) + 1)
    block = block or max(1, BLOCK_CELLS // max(1, len(gallery)))
    for start in range(0, len(queries), block):
        similarity = queries[start : start + block] @ gallery.T
        order = np.argsort(-similarity, axis=1, kind="stable")  # stable: ties keep gallery order
        relevant = gallery_ids[order] == query_ids[start : start + block, None]
        found = relevant.sum(axis=1)
        hits_so_far = np.cumsum(relevant, axis=1)
        # AP: the precision at each rank holding a correct item, averaged over those ranks
        precision_sum = (hits_so_far / ranks * relevant).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            precision[start : start + block] = np.where(found > 0, precision_sum / found, np.nan)
        first_hit[start : start + block] = np.where(found > 0, relevant.argmax(axis=1) + 1, 0)
        correct[start : start + block] = found
    scores = QueryScores(precision, first_hit, correct, np.full(len(queries), len(gallery), dtype=np.int64))
    scores.average_precision[~scores.scored], scores.first_hit_rank[~scores.scored] = np.nan, 0
    return scores


def retrieval_summary(scores: QueryScores, ranks: tuple[int, ...] = RANKS) -> dict:
    """queries (scored), skipped_queries and why (person not in the gallery, or nobody else in it), then
    map and rank_k of the scored queries, each rank_k beside chance_rank_k, a random ranking's. Without a
    scored query the figures are None and `undefined` says why."""
    scored = scores.scored
    summary: dict[str, float | str | None] = {
        "queries": int(scored.sum()),
        "skipped_queries": int((~scored).sum()),
        "skipped_person_not_in_gallery": int((scores.correct == 0).sum()),
        "skipped_nobody_else_in_gallery": int(((scores.correct > 0) & ~scored).sum()),
    }
    if not scored.any():
        return (
            summary
            | {"map": None}
            | {f"{name}_{k}": None for k in ranks for name in ("rank", "chance_rank")}
            | {"undefined": UNDEFINED}
        )
    summary["map"] = float(scores.average_precision[scored].mean())
    for k in ranks:
        summary[f"rank_{k}"] = float((scores.first_hit_rank[scored] <= k).mean())
        summary[f"chance_rank_{k}"] = float(scores.chance_rank(k)[scored].mean())
    return summary


UNDEFINED = (
    "no query has both another photo of its person and a photo of someone else in its gallery, so there is "
    "nothing to rank: MAP and rank-k are undefined, not 1.0"
)


def concatenate(scores: list[QueryScores]) -> QueryScores:
    """The queries of several runs as one, to summarise them together (e.g. every pair of one age gap)."""
    return QueryScores(
        *(np.concatenate([getattr(s, name) for s in scores]) for name in QueryScores.__dataclass_fields__)
    )


# --- groups: the periods (years) or age bands that queries and galleries are drawn from -------------------


@dataclass(frozen=True)
class Group:
    """Photos whose year (or age) lies in low..high, both included."""

    low: int
    high: int

    @property
    def label(self) -> str:
        return str(self.low) if self.low == self.high else f"{self.low}-{self.high}"

    @property
    def middle(self) -> float:
        return (self.low + self.high) / 2


def parse_groups(text: str) -> list[Group]:
    """ "2004-2006,2007-2009,2013" as Groups in ascending order; raises ValueError for a malformed,
    reversed or overlapping group, or fewer than two."""
    groups = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        low, _, high = part.partition("-")
        try:
            group = Group(int(low), int(high or low))
        except ValueError:
            raise ValueError(f"group {part!r} is not LOW-HIGH or one number (e.g. 2004-2006 or 2013)") from None
        if group.high < group.low:
            raise ValueError(f"group {part!r} ends before it starts")
        groups.append(group)
    groups.sort(key=lambda group: group.low)
    if len(groups) < 2:
        raise ValueError(f"--groups {text!r} names fewer than two groups; queries and gallery need one each")
    for earlier, later in itertools.pairwise(groups):
        if later.low <= earlier.high:
            raise ValueError(f"groups {earlier.label} and {later.label} overlap")
    return groups


def periods(values, years: int) -> list[Group]:
    """Consecutive periods of `years` from the smallest value to the largest (CACD's years 2004..2013 in
    periods of 3: 2004-2006, 2007-2009, 2010-2012, 2013-2015)."""
    values = np.asarray(values, dtype=np.float64)
    first, last = int(np.floor(values.min())), int(np.floor(values.max()))
    return [Group(low, low + years - 1) for low in range(first, last + 1, years)]


def group_of(values, groups: list[Group]) -> np.ndarray:
    """The index in `groups` of each value's group, -1 for a value in none (or NaN)."""
    values = np.floor(np.asarray(values, dtype=np.float64))
    index = np.full(len(values), -1, dtype=np.int64)
    for number, group in enumerate(groups):
        index[(values >= group.low) & (values <= group.high)] = number
    return index
