"""Verification thresholds measured from labelled pairs, overall and per age-gap band.

`evaluate.py verify --calibrate` writes a calibration file; `infer.py --calibration FILE` then uses,
for each pair, the threshold of the band matching its predicted age gap, so a 30-year gap gets a
threshold measured on 30-year gaps rather than a guess. A band with too few different-person pairs
to measure its target FAR falls back to the overall threshold, and says so.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from face_match_age.evaluation.array_metrics import AGE_GAP_BANDS, age_gap_band, rates_at, threshold_at_far

MIN_NEGATIVES_FACTOR = 1.0  # a band needs at least 1 / target_far different-person pairs to measure that FAR


class CalibrationError(ValueError):
    """A calibration file that cannot be used."""


def calibrate(scores, labels, gaps, target_far: float) -> dict:
    """The calibration record: overall and per-band thresholds meeting `target_far`, with what they achieve."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
    bands_of = np.array([age_gap_band(g) for g in gaps], dtype=object)
    overall = _band_entry(scores, labels, target_far)
    bands = {}
    for name, _, _ in AGE_GAP_BANDS:
        mask = bands_of == name
        entry = _band_entry(scores[mask], labels[mask], target_far)
        if entry["negatives"] < MIN_NEGATIVES_FACTOR / target_far:
            entry |= {
                "threshold": overall["threshold"],
                "fallback": True,
                "reason": f"only {entry['negatives']} different-person pairs; at least "
                f"{int(np.ceil(MIN_NEGATIVES_FACTOR / target_far))} are needed to measure "
                f"FAR {target_far}, so the overall threshold is used",
            }
        bands[name] = entry
    return {
        "target_far": target_far,
        "overall": overall,
        "bands": bands,
        "rule": "a pair matches when its cosine similarity is greater than the threshold",
    }


def _band_entry(scores, labels, target_far: float) -> dict:
    negatives, positives = int((~labels).sum()), int(labels.sum())
    if negatives == 0:
        return {
            "threshold": None,
            "far": None,
            "tar": None,
            "pairs": len(scores),
            "negatives": 0,
            "positives": positives,
            "fallback": False,
        }
    threshold = threshold_at_far(scores, labels, target_far)
    far, tar = rates_at(threshold, scores, labels)
    return {
        "threshold": threshold,
        "far": far,
        "tar": None if positives == 0 else tar,
        "pairs": len(scores),
        "negatives": negatives,
        "positives": positives,
        "fallback": False,
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
