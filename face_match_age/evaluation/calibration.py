"""Verification thresholds measured from labelled pairs, overall and per age-gap band.

`evaluate.py verify --calibrate` writes a calibration file; `infer.py --calibration FILE` then uses,
for each pair, the threshold of the band matching its predicted age gap, so a 30-year gap gets a
threshold measured on 30-year gaps rather than a guess. A band with too few different-person pairs
to measure its target FAR (at least 1 / FAR) falls back to the overall threshold, and says so; with too
few overall, the overall threshold is the configured --threshold, and the file and the terminal say so.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from face_match_age.evaluation.array_metrics import AGE_GAP_BANDS, age_gap_band, rates_at, threshold_at_far

MIN_NEGATIVES_FACTOR = 1.0  # a threshold needs at least 1 / target_far different-person pairs to measure that FAR


class CalibrationError(ValueError):
    """A calibration file that cannot be used."""


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
        "rule": "a pair matches when its cosine similarity is greater than the threshold",
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


def load_calibration(path: Path) -> dict:
    try:
        calibration = json.loads(Path(path).read_text())
        calibration["overall"]["threshold"], calibration["bands"]  # noqa: B018 (the fields it must have)
    except FileNotFoundError:
        raise CalibrationError(
            f"no calibration file at {path}; write one with "
            "`uv run python evaluate.py verify --pairs PAIRS.csv --out DIR --calibrate`"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CalibrationError(f"{path} is not a calibration file written by evaluate.py ({error})") from None
    if calibration["overall"]["threshold"] is None:
        raise CalibrationError(f"{path} has no overall threshold: it was measured without different-person pairs")
    return calibration


def threshold_for(calibration: dict, age_gap: float | None, source: str) -> tuple[float, dict]:
    """(threshold, why) for a pair whose predicted age gap is `age_gap` (None when ages are unknown)."""
    band = age_gap_band(age_gap) if age_gap is not None else None
    overall = calibration["overall"]["threshold"]
    if band is None:
        return overall, {
            "calibration": source,
            "band": None,
            "target_far": calibration["target_far"],
            "reason": "no predicted age gap (ages off or missing), so the overall calibrated threshold",
        }
    entry = calibration["bands"][band]
    threshold = entry["threshold"] if entry["threshold"] is not None else overall
    reason = entry.get("reason") or f"calibrated on {entry['pairs']} pairs with an age gap of {band} years"
    return threshold, {"calibration": source, "band": band, "target_far": calibration["target_far"], "reason": reason}


class CalibratedThreshold:
    """The threshold rule infer.py uses with --calibration: the band of each pair's predicted age gap."""

    def __init__(self, path: Path) -> None:
        self.source = str(path)
        self.calibration = load_calibration(path)

    def choose(self, age_gap: float | None) -> tuple[float, dict]:
        return threshold_for(self.calibration, age_gap, self.source)
