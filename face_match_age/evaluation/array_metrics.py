"""Evaluation metrics on plain arrays: age error and verification ROC figures.

Verification convention (the same as infer.py): a pair is accepted as a match when its similarity is
strictly greater than the threshold, compared as face_match_age.match_rule compares them (in float32).
FAR is the share of different-person pairs accepted, TAR the share of same-person pairs accepted.
The age-gap bands are the match rule's (match_rule.AGE_GAP_BANDS).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from face_match_age.match_rule import above

if TYPE_CHECKING:
    import torch


def mae(predicted, true) -> float:
    return float(np.mean(np.abs(np.asarray(predicted, float) - np.asarray(true, float))))


def cumulative_score(predicted, true, years: float = 5.0) -> float:
    """CS@years: share of predictions within `years` of the truth."""
    return float(np.mean(np.abs(np.asarray(predicted, float) - np.asarray(true, float)) <= years))


def median_age_guess(reference_ages, evaluated_ages) -> dict:
    """The trivial baseline of an age model: predict the median of `reference_ages` (the training set's) for every
    face of `evaluated_ages`. Its MAE and CS@5, and the guess, are what a model must beat to have learned from
    the faces anything beyond the age distribution; the median is the constant guess of least MAE."""
    guess = float(np.median(np.asarray(reference_ages, float)))
    evaluated = np.asarray(evaluated_ages, float)
    return {
        "median_age": guess,
        "mae": mae(np.full_like(evaluated, guess), evaluated),
        "cs5": cumulative_score(np.full_like(evaluated, guess), evaluated),
    }


def roc_auc(scores, labels) -> float:
    """Probability that a random same-person pair scores above a random different-person pair (ties 1/2)."""
    labels = np.asarray(labels, bool)
    if not _has_both_classes(labels):
        return float("nan")
    # the trapezoid under the exact ROC, which counts a tied pair as half
    import torch  # imported late, as torchmetrics (see roc_curve): evaluate.py --help needs neither
    from torchmetrics.functional.classification import binary_auroc

    return float(binary_auroc(_scores_in_unit_range(scores), torch.tensor(labels, dtype=torch.long)))


def rates_at(threshold: float, scores, labels) -> tuple[float, float]:
    """(FAR, TAR) when pairs scoring above `threshold` are accepted."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
    accepted = above(scores, threshold)
    far = float(accepted[~labels].mean()) if (~labels).any() else float("nan")
    tar = float(accepted[labels].mean()) if labels.any() else float("nan")
    return far, tar


def roc_curve(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(FAR, TAR, thresholds) over every distinct score, from accepting nothing to accepting all; each point
    accepts the pairs scoring above its threshold. Needs same-person and different-person pairs."""
    labels = np.asarray(labels, bool)
    if not _has_both_classes(labels):
        raise ValueError("a ROC needs both same-person and different-person pairs")
    # Imported here, not at the top: infer.py reaches this module through calibration and only reads
    # thresholds, and importing torchmetrics would cost every cold start about as much as Lightning.
    import torch
    from torchmetrics.functional.classification import binary_roc

    far, tar, _ = binary_roc(_scores_in_unit_range(scores), torch.tensor(labels, dtype=torch.long))
    # torchmetrics accepts scores >= its threshold: the same point accepting "> threshold" sits on the next
    # lower distinct score (minus infinity after the lowest)
    distinct_descending = np.unique(np.asarray(scores, float))[::-1]
    thresholds = np.concatenate([[np.inf], distinct_descending[1:], [-np.inf]])
    return far.double().numpy(), tar.double().numpy(), thresholds


def equal_error_rate(scores, labels) -> float:
    """The error rate where FAR equals FRR (1 - TAR), linearly interpolated along the ROC."""
    if not _has_both_classes(np.asarray(labels, bool)):
        return float("nan")
    # torchmetrics' binary_eer takes the nearest ROC point instead of interpolating, hence the crossing here
    far, tar, _ = roc_curve(scores, labels)
    frr = 1 - tar
    difference = far - frr  # falls from -1 (accept nothing) to +1 (accept all)
    crossing = int(np.argmax(difference >= 0))
    if crossing == 0:
        return float(far[0])
    d0, d1 = difference[crossing - 1], difference[crossing]
    weight = d0 / (d0 - d1) if d1 != d0 else 0.0
    return float(far[crossing - 1] + weight * (far[crossing] - far[crossing - 1]))


def _has_both_classes(labels: np.ndarray) -> bool:
    return bool(labels.any() and (~labels).any())


def _scores_in_unit_range(scores) -> torch.Tensor:
    """The scores' dense ranks scaled into [0, 1]: same order, same ties. torchmetrics reads scores outside
    [0, 1] (a negative cosine similarity) as logits and squashes them with a sigmoid, which can merge
    near-equal scores; ranks keep every distinct score apart."""
    import torch

    _, ranks = np.unique(np.asarray(scores, float), return_inverse=True)
    return torch.from_numpy(ranks / max(int(ranks.max(initial=0)), 1))


def threshold_at_far(scores, labels, target_far: float) -> float:
    """The lowest threshold whose FAR does not exceed `target_far` (accepting `> threshold`): one of the scores,
    as the match rule compares them (float32)."""
    # A sort counted in whole pairs, not the ROC: torchmetrics' rates are float32, where 1,000 accepted out of
    # 1,000,000 reads as more than 1e-3, and calibration needs this exact threshold.
    negatives = np.sort(np.asarray(scores, np.float32)[~np.asarray(labels, bool)])[::-1]
    if len(negatives) == 0:
        return float("nan")
    allowed = int(math.floor(target_far * len(negatives) + 1e-9))  # negatives that may score above it
    return float(negatives[min(allowed, len(negatives) - 1)])


def tar_at_far(scores, labels, target_far: float) -> float:
    return rates_at(threshold_at_far(scores, labels, target_far), scores, labels)[1]


def accuracy_at(threshold: float, scores, labels) -> float:
    scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
    return float(np.mean(above(scores, threshold) == labels))


def best_accuracy_threshold(scores, labels) -> tuple[float, float]:
    """(threshold, accuracy) maximising accuracy; thresholds halfway between neighbouring scores (the lowest
    of equally good ones)."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
    distinct = np.unique(scores)
    candidates = np.concatenate([[distinct[0] - 1e-6], (distinct[:-1] + distinct[1:]) / 2, [distinct[-1]]])
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if not _has_both_classes(labels):  # one class: accept all or nothing
        return (float(candidates[0]), 1.0) if negatives == 0 else (float(candidates[-1]), 1.0)
    far, tar, _ = roc_curve(scores, labels)  # from the highest threshold down, so reversed to match `candidates`
    # the rates come back in float32: counting whole pairs keeps equally good thresholds exactly equal
    correct = np.rint(tar[::-1] * positives) + negatives - np.rint(far[::-1] * negatives)
    best = int(np.argmax(correct))
    return float(candidates[best]), float(correct[best] / len(scores))
