"""Age decades: one definition for the splits, evaluate.py's per-decade figures and TensorBoard's figure."""

import numpy as np
import pandas as pd
import pytest
import torch

from face_match_age.evaluation.age_decades import LAST_DECADE, age_decade, decade_label


@pytest.mark.parametrize(("age", "label"), [(0, "0-9"), (9, "0-9"), (10, "10-19"), (99, "90-100"), (100, "90-100")])
def test_each_age_falls_in_the_decade_its_label_names(age, label):
    assert decade_label(int(age_decade(age))) == label


def test_age_100_is_inside_the_range_of_its_label():
    low, high = (int(bound) for bound in decade_label(int(age_decade(100))).split("-"))
    assert low <= 100 <= high


def test_every_age_from_0_to_100_is_in_one_of_ten_decades():
    decades = age_decade(np.arange(101))
    assert sorted(set(decades.tolist())) == list(range(LAST_DECADE + 1))
    assert LAST_DECADE == 9


def test_series_tensors_and_lists_give_the_same_decades():
    ages = [3, 19.5, 20, 100]
    expected = [0, 1, 2, 9]
    assert age_decade(pd.Series(ages)).tolist() == expected
    assert age_decade(torch.tensor(ages)).tolist() == expected
    assert age_decade(ages).tolist() == expected


def test_evaluate_reports_age_100_in_the_90_to_100_decade():
    import evaluate

    predictions = pd.DataFrame(
        {"age": [100, 95, 5], "predicted": [90.0, 95.0, 5.0], "interval_low": [0] * 3, "interval_high": [100] * 3}
    )
    summary = evaluate.age_summary(predictions)
    assert summary["per_decade"]["90-100"]["faces"] == 2
    assert "90-99" not in summary["per_decade"]


def test_the_predicted_vs_true_figure_has_one_bar_per_decade_present():
    from face_match_age.evaluation.figures import predicted_vs_true_figure

    figure = predicted_vs_true_figure(torch.tensor([5.0, 15.0, 100.0]), torch.tensor([7.0, 15.0, 90.0]))
    scatter, bars = figure.axes
    assert [label.get_text() for label in bars.get_xticklabels()] == ["0-9", "10-19", "90-100"]
    assert [patch.get_height() for patch in bars.patches] == [2.0, 0.0, 10.0]
    assert scatter.get_title() == "MAE 4.00 on 3 faces"
