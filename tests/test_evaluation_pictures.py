"""evaluate.py's figures and contact sheets, tested on arrays with known answers: the ROC's log axis, its
curves and threshold point, the histogram's threshold line, the age figure's uncertainty bars, which cases
the sheets pick, and sheet sizes that stay the same however many cases there are."""

import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.container import ErrorbarContainer
from PIL import Image

from face_match_age.evaluation import array_metrics
from face_match_age.evaluation.figures import (
    FAR_FLOOR,
    ROC_BAND_PREFIX,
    predicted_vs_true_figure,
    roc_figure,
    similarity_histogram_figure,
)
from face_match_age.reports import evaluation_sheets
from face_match_age.reports.contact_sheet import Tile, contact_sheet

# Age gap 2 (band 0-5) and 30 (band 20+) hold both kinds of pair; gap 7 (band 5-10) one same-person pair only.
SCORES = np.array([0.9, 0.2, 0.8, 0.4, 0.7, 0.6, 0.3])
LABELS = np.array([True, False, True, False, True, False, True])
GAPS = [2, 2, 30, 30, 7, 2, None]
THRESHOLD = 0.5


def _roc_axis():
    return roc_figure(SCORES, LABELS, GAPS, THRESHOLD).axes[0]


def _labelled_lines(axis, prefix):
    return [line for line in axis.get_lines() if line.get_label().startswith(prefix)]


def test_the_roc_false_accept_axis_is_logarithmic_from_1e_4_to_1():
    axis = _roc_axis()
    assert axis.get_xscale() == "log"
    assert axis.get_xlim() == pytest.approx((1e-4, 1))


def test_the_roc_draws_one_curve_per_age_gap_band_holding_both_kinds_of_pair():
    curves = _labelled_lines(_roc_axis(), ROC_BAND_PREFIX)
    assert [line.get_label().split(":")[0] for line in curves] == ["age gap 0-5", "age gap 20+"]


def test_a_band_of_one_kind_of_pair_is_named_in_the_legend_without_a_curve():
    legend = [text.get_text() for text in _roc_axis().get_legend().get_texts()]
    assert "age gap 5-10: 1 pair(s) of one kind, no curve" in legend


def test_the_roc_marks_the_rates_at_the_threshold():
    (marker,) = _labelled_lines(_roc_axis(), f"threshold {THRESHOLD:g}")
    far, tar = array_metrics.rates_at(THRESHOLD, SCORES, LABELS)
    assert marker.get_xdata()[0] == pytest.approx(far)
    assert marker.get_ydata()[0] == pytest.approx(tar)


def test_a_false_accept_rate_of_zero_is_drawn_on_the_axis_floor():
    (overall,) = _labelled_lines(_roc_axis(), "all pairs")
    far = np.asarray(overall.get_xdata(), dtype=float)
    assert far.min() == FAR_FLOOR
    assert np.isfinite(far).all()


def test_the_roc_threshold_point_with_no_false_accept_is_on_the_axis_floor():
    axis = roc_figure(SCORES, LABELS, GAPS, 0.95).axes[0]
    (marker,) = _labelled_lines(axis, "threshold 0.95")
    assert marker.get_xdata()[0] == FAR_FLOOR


def test_the_histogram_draws_the_threshold_as_a_vertical_line():
    axis = similarity_histogram_figure(SCORES, LABELS, THRESHOLD).axes[0]
    (line,) = _labelled_lines(axis, "threshold")
    assert list(line.get_xdata()) == [THRESHOLD, THRESHOLD]


def test_the_histogram_counts_each_kind_of_pair_in_its_legend():
    legend = [
        text.get_text()
        for text in similarity_histogram_figure(SCORES, LABELS, THRESHOLD).axes[0].get_legend().get_texts()
    ]
    assert legend[:2] == ["same person (4)", "different people (3)"]


def test_the_age_figure_draws_each_face_spread_as_an_error_bar():
    scatter, _ = predicted_vs_true_figure([5.0, 15.0], [7.0, 15.0], age_std=[1.5, 3.0]).axes
    (bars,) = [c for c in scatter.containers if isinstance(c, ErrorbarContainer)]
    _, _, (vertical,) = bars.lines
    assert [segment[:, 1].tolist() for segment in vertical.get_segments()] == [[5.5, 8.5], [12.0, 18.0]]


def test_the_age_figure_marks_the_signed_bias_of_each_decade():
    _, decades = predicted_vs_true_figure([5.0, 8.0, 15.0], [7.0, 10.0, 12.0], age_std=[1.0, 1.0, 1.0]).axes
    (bias,) = [c for c in decades.containers if isinstance(c, ErrorbarContainer)]
    assert bias.lines[0].get_ydata().tolist() == [2.0, -3.0]


def test_the_most_similar_different_person_pairs_are_the_worst_false_accepts():
    scores = [0.9, 0.2, 0.8, 0.95, math.nan, 0.6]
    labels = [True, False, False, False, False, False]
    assert evaluation_sheets.worst_false_accepts(scores, labels, 3).tolist() == [3, 2, 5]


def test_the_least_similar_same_person_pairs_are_the_worst_false_rejects():
    scores = [0.9, 0.2, 0.1, 0.5, math.nan, 0.3]
    labels = [True, True, False, True, True, True]
    assert evaluation_sheets.worst_false_rejects(scores, labels, 3).tolist() == [1, 5, 3]


def test_the_largest_age_errors_come_first_whatever_their_sign():
    assert evaluation_sheets.largest_age_errors([30, 30, 30, 30], [31, 10, 45, 30], 2).tolist() == [1, 2]


def _photo(path, shade):
    Image.new("RGB", (200, 160), (shade, 90, 40)).save(path)
    return path


def _pairs(tmp_path, count):
    rng = np.random.default_rng(0)
    photos = [_photo(tmp_path / f"p{i}.jpg", 10 * i) for i in range(4)]
    return pd.DataFrame(
        {
            "path1": [photos[i % 4] for i in range(count)],
            "path2": [photos[(i + 1) % 4] for i in range(count)],
            "box1": [[20, 10, 120, 130]] * count,
            "box2": [None] * count,
            "age1": [30.0] * count,
            "age2": [None] * count,
            "score": rng.uniform(-1, 1, count),
            "label": [i % 2 for i in range(count)],
        }
    )


def _size(path):
    with Image.open(path) as sheet:
        sheet.load()
        return sheet.size


def _full_sheet_size(faces_per_tile, columns):
    tiles = [Tile([None] * faces_per_tile)] * evaluation_sheets.WORST_CASES
    return contact_sheet(tiles, title="a title", columns=columns).size


@pytest.mark.parametrize("pairs", [2 * evaluation_sheets.WORST_CASES + 2, 500])
def test_pair_sheets_hold_at_most_the_worst_cases_whatever_the_number_of_pairs(tmp_path, pairs):
    written = evaluation_sheets.save_worst_pair_sheets(_pairs(tmp_path, pairs), 0.0, tmp_path)
    expected = _full_sheet_size(2, evaluation_sheets.PAIR_COLUMNS)
    assert _size(written["worst_false_accepts"]) == expected
    assert _size(written["worst_false_rejects"]) == expected


@pytest.mark.parametrize("faces", [evaluation_sheets.WORST_CASES + 1, 400])
def test_the_age_error_sheet_holds_at_most_the_worst_cases_whatever_the_number_of_faces(tmp_path, faces):
    _photo(tmp_path / "face.jpg", 100)
    predictions = pd.DataFrame(
        {
            "name": ["face.jpg"] * faces,
            "age": np.arange(faces) % 90,
            "predicted": [40.0] * faces,
            "age_std": [5.0] * faces,
        }
    )
    written = evaluation_sheets.save_age_error_sheet(predictions, tmp_path, tmp_path / "sheet.jpg")
    assert _size(written) == _full_sheet_size(1, evaluation_sheets.FACE_COLUMNS)


def test_a_photo_gone_since_scoring_leaves_an_empty_square_not_an_error(tmp_path):
    pairs = _pairs(tmp_path, 4)
    (tmp_path / "p0.jpg").unlink()
    written = evaluation_sheets.save_worst_pair_sheets(pairs, 0.0, tmp_path)
    two_pairs = contact_sheet([Tile([None, None])] * 2, title="a title", columns=evaluation_sheets.PAIR_COLUMNS)
    assert _size(written["worst_false_accepts"]) == two_pairs.size


def _captured_tiles(monkeypatch):
    sheets = {}

    def capture(tiles, path, title="", **layout):
        sheets[path.stem] = tiles
        return path

    monkeypatch.setattr(evaluation_sheets, "save_contact_sheet", capture)
    return sheets


def test_a_pair_tile_gives_the_similarity_and_both_predicted_ages(tmp_path, monkeypatch):
    sheets = _captured_tiles(monkeypatch)
    pairs = _pairs(tmp_path, 2).assign(score=[0.9, 0.8], label=[0, 1], age1=[31.2, 40.0], age2=[57.6, 41.0])
    evaluation_sheets.save_worst_pair_sheets(pairs, 0.5, tmp_path)
    (false_accept,) = sheets["worst_false_accepts"]
    assert false_accept.caption[0] == "similarity 0.900  FALSE ACCEPT"
    assert false_accept.caption[1] == "predicted ages 31 / 58"
    assert len(false_accept.faces) == 2


def test_a_pair_the_threshold_gets_right_has_no_red_frame(tmp_path, monkeypatch):
    sheets = _captured_tiles(monkeypatch)
    pairs = _pairs(tmp_path, 2).assign(score=[0.9, 0.8], label=[0, 1])
    evaluation_sheets.save_worst_pair_sheets(pairs, 0.5, tmp_path)
    (same_person,) = sheets["worst_false_rejects"]
    assert same_person.frame == evaluation_sheets.RIGHT
    assert same_person.caption[0] == "similarity 0.800"


def test_an_age_error_tile_gives_the_true_age_the_prediction_and_the_file(tmp_path, monkeypatch):
    sheets = _captured_tiles(monkeypatch)
    _photo(tmp_path / "face.jpg", 100)
    predictions = pd.DataFrame({"name": ["face.jpg"], "age": [30], "predicted": [44.26], "age_std": [6.04]})
    evaluation_sheets.save_age_error_sheet(predictions, tmp_path, tmp_path / "largest_age_errors.jpg")
    (tile,) = sheets["largest_age_errors"]
    assert tile.caption == ["true 30", "pred 44.3 ± 6.0", "face.jpg"]
