"""Verification thresholds measured from labelled pairs, overall and per age-gap band.

`evaluate.py verify --calibrate` writes a calibration file; `infer.py --calibration FILE` then uses, for
each pair, the threshold of the band matching its predicted age gap (match_rule.MatchRule.from_calibration),
so a 30-year gap gets a threshold measured on 30-year gaps rather than a guess. A band with too few
different-person pairs to measure its target FAR (at least 1 / FAR) falls back to the overall threshold, and
says so; with too few overall, the overall threshold is the configured --threshold, and the file and the
terminal say so.
"""

from __future__ import annotations

import numpy as np

from face_match_age.evaluation.array_metrics import rates_at, threshold_at_far
from face_match_age.match_rule import AGE_GAP_BANDS, RULE_TEXT, age_gap_band

MIN_NEGATIVES_FACTOR = 1.0  # a threshold needs at least 1 / target_far different-person pairs to measure that FAR


def minimum_negatives(target_far: float) -> int:
    """The different-person pairs needed to measure `target_far`: with fewer, one false accept already
    exceeds it, so the measured threshold is just the highest different-person score (FAR 0.0)."""
    return int(np.ceil(MIN_NEGATIVES_FACTOR / target_far - 1e-9))


def calibrate(scores, labels, gaps, target_far: float, *, fallback_threshold: float) -> dict:
    """The calibration record: overall and per-band thresholds meeting `target_far`, with what they achieve.
    Too few different-person pairs (`minimum_negatives`) overall: `fallback_threshold` (the configured
    --threshold) is kept; in a band: the overall threshold. Each fallback says so in its `reason`, and its
    far and tar are those of the threshold it uses."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
    bands_of = np.array([age_gap_band(g) for g in gaps], dtype=object)
    overall = _entry(scores, labels, target_far, fallback_threshold, "the configured threshold (--threshold)")
    bands = {}
    for name, _, _ in AGE_GAP_BANDS:
        mask = bands_of == name
        bands[name] = _entry(scores[mask], labels[mask], target_far, overall["threshold"], "the overall threshold")
    return {
        "target_far": target_far,
        "overall": overall,
        "bands": bands,
        "rule": RULE_TEXT,
    }


def fallback_note(record: dict) -> str | None:
    """One line for the terminal when the overall threshold is a fallback, else None."""
    overall = record["overall"]
    return f"note: calibration: {overall['reason']}" if overall["fallback"] else None


def _entry(scores, labels, target_far: float, fallback: float, fallback_name: str) -> dict:
    """The threshold meeting `target_far` on these pairs, or `fallback` when they are too few to measure it."""
    negatives, needed = int((~labels).sum()), minimum_negatives(target_far)
    if negatives >= needed:
        return _rates(threshold_at_far(scores, labels, target_far), scores, labels) | {"fallback": False}
    return _rates(fallback, scores, labels) | {
        "fallback": True,
        "reason": f"only {negatives} different-person pairs; at least {needed} are needed to measure "
        f"FAR {target_far}, so {fallback_name} {fallback:.4g} is used",
    }


def _rates(threshold: float, scores, labels) -> dict:
    """The threshold with the FAR and TAR it gets on these pairs (None without pairs of that kind)."""
    negatives, positives = int((~labels).sum()), int(labels.sum())
    far, tar = rates_at(threshold, scores, labels)
    return {
        "threshold": threshold,
        "far": far if negatives else None,
        "tar": tar if positives else None,
        "pairs": len(scores),
        "negatives": negatives,
        "positives": positives,
    }
