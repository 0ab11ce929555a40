"""Evaluation metrics on plain arrays: age error and verification ROC figures.

Verification convention (the same as infer.py): a pair is accepted as a match when its similarity is
strictly greater than the threshold. FAR is the share of different-person pairs accepted, TAR the
share of same-person pairs accepted.
"""

from __future__ import annotations

import math

import numpy as np

AGE_GAP_BANDS = (("0-5", 0, 5), ("5-10", 5, 10), ("10-20", 10, 20), ("20+", 20, math.inf))


def mae(predicted, true) -> float:
    return float(np.mean(np.abs(np.asarray(predicted, float) - np.asarray(true, float))))


def cumulative_score(predicted, true, years: float = 5.0) -> float:
    """CS@years: share of predictions within `years` of the truth."""
    return float(np.mean(np.abs(np.asarray(predicted, float) - np.asarray(true, float)) <= years))


def age_gap_band(gap: float) -> str | None:
    """The band ("0-5", "5-10", "10-20", "20+") holding an age gap; lower bounds included."""
    if gap is None or not math.isfinite(gap):
        return None
    return next(name for name, low, high in AGE_GAP_BANDS if low <= abs(gap) < high)


def roc_auc(scores, labels) -> float:
    """Probability that a random same-person pair scores above a random different-person pair (ties 1/2)."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
    positives, negatives = scores[labels], scores[~labels]
    if len(positives) == 0 or len(negatives) == 0:
        return float("nan")
    greater = (positives[:, None] > negatives[None, :]).sum()
    ties = (positives[:, None] == negatives[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(positives) * len(negatives)))


def rates_at(threshold: float, scores, labels) -> tuple[float, float]:
    """(FAR, TAR) when pairs scoring above `threshold` are accepted."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
    accepted = scores > threshold
    far = float(accepted[~labels].mean()) if (~labels).any() else float("nan")
    tar = float(accepted[labels].mean()) if labels.any() else float("nan")
    return far, tar


def roc_curve(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(FAR, TAR, thresholds) over every distinct score, from accepting nothing to accepting all."""
    scores = np.asarray(scores, float)
    thresholds = np.concatenate([[np.inf], np.unique(scores)[::-1], [-np.inf]])
    rates = np.array([rates_at(t, scores, labels) for t in thresholds])
    return rates[:, 0], rates[:, 1], thresholds


def equal_error_rate(scores, labels) -> float:
    """The error rate where FAR equals FRR (1 - TAR), linearly interpolated along the ROC."""
    far, tar, _ = roc_curve(scores, labels)
    frr = 1 - tar
    difference = far - frr  # falls from -1 (accept nothing) to +1 (accept all)
    crossing = int(np.argmax(difference >= 0))
    if crossing == 0:
        return float(far[0])
    d0, d1 = difference[crossing - 1], difference[crossing]
    weight = d0 / (d0 - d1) if d1 != d0 else 0.0
    return float(far[crossing - 1] + weight * (far[crossing] - far[crossing - 1]))


def threshold_at_far(scores, labels, target_far: float) -> float:
    """The lowest threshold whose FAR does not exceed `target_far` (accepting `> threshold`)."""
    negatives = np.sort(np.asarray(scores, float)[~np.asarray(labels, bool)])[::-1]
    if len(negatives) == 0:
        return float("nan")
    allowed = int(math.floor(target_far * len(negatives) + 1e-9))  # negatives that may score above it
    return float(negatives[min(allowed, len(negatives) - 1)])


def tar_at_far(scores, labels, target_far: float) -> float:
    return rates_at(threshold_at_far(scores, labels, target_far), scores, labels)[1]


def accuracy_at(threshold: float, scores, labels) -> float:
    scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
    return float(np.mean((scores > threshold) == labels))


def best_accuracy_threshold(scores, labels) -> tuple[float, float]:
    """(threshold, accuracy) maximising accuracy; thresholds halfway between neighbouring scores."""
    distinct = np.unique(np.asarray(scores, float))
    candidates = np.concatenate([[distinct[0] - 1e-6], (distinct[:-1] + distinct[1:]) / 2, [distinct[-1]]])
    accuracies = [accuracy_at(t, scores, labels) for t in candidates]
    best = int(np.argmax(accuracies))
    return float(candidates[best]), float(accuracies[best])
