"""Metrics against values worked out by hand on small arrays."""

import math

import numpy as np
import pytest

from face_match_age.evaluation import array_metrics
from face_match_age.evaluation.calibration import calibrate
from face_match_age.match_rule import MatchRule, age_gap_band


def test_mae_and_cs5_by_hand():
    predicted, true = [10, 20, 30, 40], [12, 27, 30, 34.5]
    assert array_metrics.mae(predicted, true) == pytest.approx((2 + 7 + 0 + 5.5) / 4)
    assert array_metrics.cumulative_score(predicted, true) == pytest.approx(2 / 4)  # |2| and |0|; not 7 or 5.5


def test_auc_counts_ordered_pairs_with_ties_as_half():
    scores = [0.9, 0.8, 0.4, 0.8, 0.3, 0.1]
    labels = [1, 1, 1, 0, 0, 0]
    # positives vs negatives: 0.9 beats 3; 0.8 beats 2 and ties 1; 0.4 beats 2 -> (3 + 2.5 + 2) / 9
    assert array_metrics.roc_auc(scores, labels) == pytest.approx(7.5 / 9)
    assert array_metrics.roc_auc([0.9, 0.1], [1, 0]) == 1.0
    assert array_metrics.roc_auc([0.1, 0.9], [1, 0]) == 0.0


def test_rates_accept_strictly_above_the_threshold():
    scores, labels = [0.9, 0.7, 0.7, 0.2], [1, 1, 0, 0]
    assert array_metrics.rates_at(0.7, scores, labels) == (0.0, 0.5)  # 0.7 itself is not accepted
    assert array_metrics.rates_at(0.5, scores, labels) == (0.5, 1.0)
    assert array_metrics.accuracy_at(0.7, scores, labels) == 0.75


def test_equal_error_rate_by_hand():
    # positives 0.9 0.6 0.4; negatives 0.5 0.3 0.1. At threshold 0.45: FAR 1/3, FRR 1/3.
    scores, labels = [0.9, 0.6, 0.4, 0.5, 0.3, 0.1], [1, 1, 1, 0, 0, 0]
    assert array_metrics.equal_error_rate(scores, labels) == pytest.approx(1 / 3)
    assert array_metrics.equal_error_rate([0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0]) == pytest.approx(0.0)


def test_tar_at_far_by_hand():
    negatives = np.linspace(0.0, 0.99, 100)  # 100 different-person pairs: 0.00, 0.01, ... 0.99
    positives = np.array([0.995, 0.985, 0.5, 0.2])
    scores = np.concatenate([positives, negatives])
    labels = np.array([1] * 4 + [0] * 100, bool)
    # FAR 1e-2 lets one negative through: threshold = second highest negative (0.98), accepting 0.99 only.
    assert array_metrics.threshold_at_far(scores, labels, 1e-2) == pytest.approx(0.98)
    assert array_metrics.tar_at_far(scores, labels, 1e-2) == pytest.approx(2 / 4)
    assert array_metrics.threshold_at_far(scores, labels, 1e-3) == pytest.approx(0.99)  # no negative accepted
    assert array_metrics.tar_at_far(scores, labels, 1e-3) == pytest.approx(1 / 4)  # only 0.995 is above 0.99


def test_best_threshold_maximises_accuracy():
    threshold, accuracy = array_metrics.best_accuracy_threshold([0.9, 0.8, 0.6, 0.4, 0.3], [1, 1, 0, 0, 0])
    assert accuracy == 1.0
    assert 0.6 <= threshold < 0.8
    threshold, accuracy = array_metrics.best_accuracy_threshold([0.9, 0.8, 0.6, 0.4, 0.3], [1, 1, 0, 1, 0])
    assert accuracy == pytest.approx(0.8)
    assert array_metrics.accuracy_at(threshold, [0.9, 0.8, 0.6, 0.4, 0.3], [1, 1, 0, 1, 0]) == pytest.approx(0.8)


def test_age_gap_bands():
    assert [age_gap_band(g) for g in (0, 4.9, 5, 12, 20, 45)] == [
        "0-5",
        "0-5",
        "5-10",
        "10-20",
        "20+",
        "20+",
    ]
    assert age_gap_band(math.nan) is None


def test_calibration_meets_its_target_overall_and_per_band():
    rng = np.random.default_rng(0)
    # Large gaps make same-person pairs look less alike, and different people too: a band needs its own threshold.
    scores, labels, gaps = [], [], []
    for gap, shift in ((2, 0.0), (30, -0.25)):
        scores += list(rng.normal(0.8 + shift, 0.05, 300)) + list(rng.normal(0.2 + shift, 0.1, 300))
        labels += [True] * 300 + [False] * 300
        gaps += [gap] * 600
    scores, labels, gaps = np.array(scores), np.array(labels), np.array(gaps)
    record = calibrate(scores, labels, gaps, target_far=1e-2, fallback_threshold=0.5)
    for name, mask in (("0-5", gaps == 2), ("20+", gaps == 30)):
        entry = record["bands"][name]
        assert not entry["fallback"]
        far, _ = array_metrics.rates_at(entry["threshold"], scores[mask], labels[mask])
        assert far <= 1e-2
        assert entry["far"] == far
        # the lowest such threshold
        assert array_metrics.rates_at(entry["threshold"] - 1e-3, scores[mask], labels[mask])[0] > 1e-2
    assert record["bands"]["20+"]["threshold"] < record["bands"]["0-5"]["threshold"]
    assert record["bands"]["5-10"]["fallback"]
    assert record["bands"]["5-10"]["threshold"] == record["overall"]["threshold"]
    rule = MatchRule(record["overall"]["threshold"], record, "cal.json")
    threshold, why = rule.threshold_for(31.0)
    assert threshold == record["bands"]["20+"]["threshold"]
    assert why["band"] == "20+"
    threshold, why = rule.threshold_for(None)
    assert threshold == record["overall"]["threshold"]
    assert "overall" in why["reason"]


def _pairs_with_ties(count: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    """Cosine-like scores in [-1, 1], rounded so that many tie, same-person pairs scoring higher on average."""
    rng = np.random.default_rng(1)
    labels = rng.random(count) < 0.3
    scores = np.clip(rng.normal(np.where(labels, 0.4, -0.1), 0.3), -1, 1).round(2)
    return scores, labels


def _reference_roc(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    """(FAR, TAR) by counting accepted pairs at every distinct score, from accepting nothing to accepting all."""
    thresholds = np.concatenate([[np.inf], np.unique(scores)[::-1], [-np.inf]])
    rates = np.array([array_metrics.rates_at(t, scores, labels) for t in thresholds])
    return rates[:, 0], rates[:, 1]


def test_auc_matches_counting_every_pair_on_random_scores():
    scores, labels = _pairs_with_ties()
    positives, negatives = scores[labels], scores[~labels]
    wins = (positives[:, None] > negatives[None, :]).sum() + 0.5 * (positives[:, None] == negatives[None, :]).sum()
    assert array_metrics.roc_auc(scores, labels) == pytest.approx(wins / (len(positives) * len(negatives)), abs=1e-6)


def test_roc_curve_matches_counting_at_every_threshold_on_random_scores():
    scores, labels = _pairs_with_ties()
    far, tar, thresholds = array_metrics.roc_curve(scores, labels)
    reference_far, reference_tar = _reference_roc(scores, labels)
    # the reference also evaluates the highest score itself, a second "accept nothing" point
    np.testing.assert_allclose(far, np.delete(reference_far, 1), atol=1e-6)
    np.testing.assert_allclose(tar, np.delete(reference_tar, 1), atol=1e-6)
    measured = np.array([array_metrics.rates_at(t, scores, labels) for t in thresholds])
    np.testing.assert_allclose(measured[:, 0], far, atol=1e-6)  # each threshold accepts what its point says


def test_equal_error_rate_matches_interpolating_the_counted_roc_on_random_scores():
    scores, labels = _pairs_with_ties()
    far, tar = _reference_roc(scores, labels)
    difference = far - (1 - tar)
    crossing = int(np.argmax(difference >= 0))
    weight = difference[crossing - 1] / (difference[crossing - 1] - difference[crossing])
    expected = far[crossing - 1] + weight * (far[crossing] - far[crossing - 1])
    assert array_metrics.equal_error_rate(scores, labels) == pytest.approx(expected, abs=1e-6)


def test_best_threshold_matches_trying_every_candidate_on_random_scores():
    scores, labels = _pairs_with_ties()
    distinct = np.unique(scores)
    candidates = np.concatenate([[distinct[0] - 1e-6], (distinct[:-1] + distinct[1:]) / 2, [distinct[-1]]])
    accuracies = [array_metrics.accuracy_at(t, scores, labels) for t in candidates]
    threshold, accuracy = array_metrics.best_accuracy_threshold(scores, labels)
    assert threshold == candidates[int(np.argmax(accuracies))]
    assert accuracy == max(accuracies)


def test_best_threshold_with_one_class_accepts_all_or_nothing():
    assert array_metrics.best_accuracy_threshold([0.3, 0.8], [1, 1]) == pytest.approx((0.3 - 1e-6, 1.0))
    assert array_metrics.best_accuracy_threshold([0.3, 0.8], [0, 0]) == (0.8, 1.0)


def test_roc_figures_of_one_class_are_undefined():
    assert math.isnan(array_metrics.roc_auc([0.3, 0.8], [1, 1]))
    assert math.isnan(array_metrics.equal_error_rate([0.3, 0.8], [0, 0]))
    with pytest.raises(ValueError, match="both"):
        array_metrics.roc_curve([0.3, 0.8], [1, 1])
