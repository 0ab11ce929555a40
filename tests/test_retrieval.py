import csv
import json

import numpy as np
import pytest
from PIL import Image

import evaluate
from face_match_age.evaluation import retrieval
from face_match_age.exit_codes import ExitCode

# A query at angle 0 and one at angle ~53 degrees, against four unit vectors in the plane
GALLERY = np.array([[0.0, 1.0], [1.0, 0.0], [0.8, 0.6], [0.6, 0.8]])
GALLERY_IDS = ["a", "b", "a", "b"]
QUERIES = np.array([[1.0, 0.0], [0.6, 0.8], [1.0, 0.0]])
QUERY_IDS = ["a", "b", "c"]  # nobody called c is in the gallery


def test_average_precision_and_first_hit_match_hand_computed_values():
    scores = retrieval.score_queries(QUERIES, QUERY_IDS, GALLERY, GALLERY_IDS)
    # query a: similarities 0, 1, .8, .6 -> ranked b, a, b, a: correct at ranks 2 and 4, AP = (1/2 + 2/4) / 2 = 0.5
    # query b: similarities .8, .6, .96, 1 -> ranked b, a, a, b: correct at ranks 1 and 4, AP = (1/1 + 2/4) / 2 = 0.75
    np.testing.assert_allclose(scores.average_precision[:2], [0.5, 0.75])
    assert scores.first_hit_rank[:2].tolist() == [2, 1]


def test_map_and_rank_k_match_hand_computed_values():
    summary = retrieval.retrieval_summary(retrieval.score_queries(QUERIES, QUERY_IDS, GALLERY, GALLERY_IDS))
    assert summary["map"] == pytest.approx((0.5 + 0.75) / 2)  # 0.625
    assert summary["rank_1"] == pytest.approx(1 / 2)  # only query b finds its person first
    assert summary["rank_5"] == pytest.approx(1.0)  # both find theirs within 5 (ranks 2 and 1)


def test_a_query_without_its_identity_in_the_gallery_is_skipped_and_counted():
    scores = retrieval.score_queries(QUERIES, QUERY_IDS, GALLERY, GALLERY_IDS)
    summary = retrieval.retrieval_summary(scores)
    assert np.isnan(scores.average_precision[2])
    assert summary["queries"] == 2
    assert summary["skipped_queries"] == 1


def test_equally_similar_gallery_items_rank_in_gallery_order():
    same_vector = np.array([[1.0, 0.0], [1.0, 0.0]])
    wrong_first = retrieval.score_queries([[1.0, 0.0]], ["a"], same_vector, ["b", "a"])
    right_first = retrieval.score_queries([[1.0, 0.0]], ["a"], same_vector, ["a", "b"])
    assert wrong_first.average_precision[0] == pytest.approx(0.5)
    assert right_first.average_precision[0] == pytest.approx(1.0)


def test_scoring_in_blocks_gives_the_same_scores_as_at_once():
    rng = np.random.default_rng(0)
    queries, gallery = rng.normal(size=(7, 16)), rng.normal(size=(20, 16))
    query_ids, gallery_ids = rng.integers(0, 4, 7), rng.integers(0, 4, 20)
    whole = retrieval.score_queries(queries, query_ids, gallery, gallery_ids)
    blocks = retrieval.score_queries(queries, query_ids, gallery, gallery_ids, block=3)
    np.testing.assert_array_equal(whole.average_precision, blocks.average_precision)
    np.testing.assert_array_equal(whole.first_hit_rank, blocks.first_hit_rank)


def test_groups_parse_sorted_and_overlaps_are_refused():
    groups = retrieval.parse_groups("2010-2012, 2004-2006,2013")
    assert [group.label for group in groups] == ["2004-2006", "2010-2012", "2013"]
    with pytest.raises(ValueError, match="overlap"):
        retrieval.parse_groups("2004-2007,2007-2009")


# --- evaluate.py retrieve, end to end ---------------------------------------------------------------------


@pytest.fixture
def labelled_photos(photo_dir, tmp_path):
    """Six face photos of three people over three periods, and a photo without a face."""
    from dataset_archives import face_photo_folder

    folder = face_photo_folder(tmp_path / "photos", photo_dir / "coffee.jpg")
    rows = [
        ("face0.jpg", "a", 2005),
        ("face1.jpg", "a", 2011),
        ("face2.jpg", "b", 2005),
        ("face3.jpg", "b", 2008),
        ("face4.jpg", "b", 2011),
        ("face5.jpg", "c", 2011),
        ("coffee.jpg", "a", 2008),
        ("face0.jpg", "a", 2005),  # listed twice: still detected and embedded once
    ]
    with open(tmp_path / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "identity", "year"])
        writer.writerows(rows)
    return folder, tmp_path / "labels.csv"


def _retrieve(csv_path, images, out):
    return evaluate.main(
        ["retrieve", "--csv", str(csv_path), "--images", str(images), "--out", str(out), "--device", "cpu"]
    )


def test_retrieve_reports_every_later_group_against_every_earlier(labelled_photos, tmp_path, torch_home_with_vggface2):
    images, labels = labelled_photos
    assert _retrieve(labels, images, tmp_path / "out") == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    # default periods from 2005: 2005-2007, 2008-2010, 2011-2013
    pairs = [(pair["query_group"], pair["gallery_group"]) for pair in summary["pairs"]]
    assert pairs == [("2008-2010", "2005-2007"), ("2011-2013", "2005-2007"), ("2011-2013", "2008-2010")]
    assert set(summary["pairs"][0]) >= {"queries", "gallery", "map", "rank_1", "rank_5", "gap"}
    assert [row["gap"] for row in summary["by_gap"]] == [3.0, 6.0]
    # 2011-2013 against 2005-2007: a and b are in the gallery, c is not
    assert summary["pairs"][1]["queries"] == 2
    assert summary["pairs"][1]["skipped_queries"] == 1


def test_retrieve_lists_photos_without_a_face(labelled_photos, tmp_path, torch_home_with_vggface2):
    images, labels = labelled_photos
    assert _retrieve(labels, images, tmp_path / "out") == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["photos_without_a_face"] == 1
    assert summary["failures"][0]["photo"] == "coffee.jpg"


def test_retrieve_detects_and_embeds_each_photo_once(labelled_photos, tmp_path, torch_home_with_vggface2, monkeypatch):
    from face_match_age.inference.analyzer import FaceAnalyzer

    analysed, analyze_many = [], FaceAnalyzer.analyze_many

    def counting(self, photos, **options):
        photos = list(photos)
        analysed.extend(photo.name for photo in photos)
        return analyze_many(self, photos, **options)

    monkeypatch.setattr(FaceAnalyzer, "analyze_many", counting)
    images, labels = labelled_photos
    assert _retrieve(labels, images, tmp_path / "out") == 0
    assert sorted(analysed) == sorted(path.name for path in images.iterdir())


def test_retrieve_draws_a_fixed_size_plot(labelled_photos, tmp_path, torch_home_with_vggface2):
    images, labels = labelled_photos
    assert _retrieve(labels, images, tmp_path / "out") == 0
    with Image.open(tmp_path / "out" / "retrieval_by_gap.png") as picture:
        picture.load()
        assert picture.size == (780, 540)  # 6.5 x 4.5 inches at FIGURE_DPI 120


def test_retrieve_without_an_identity_column_fails_with_one_line(tmp_path, capsys):
    labels = tmp_path / "labels.csv"
    labels.write_text("name,year\nface0.jpg,2005\n")
    assert _retrieve(labels, tmp_path, tmp_path / "out") == ExitCode.INPUT
    error = capsys.readouterr().err
    assert "identity" in error
    assert len(error.strip().splitlines()) == 1


def test_retrieve_with_no_face_in_any_photo_fails_with_one_line(photo_dir, tmp_path, torch_home_with_vggface2, capsys):
    labels = tmp_path / "labels.csv"
    labels.write_text("name,identity,year\ncoffee.jpg,a,2005\ncoffee.jpg,b,2010\n")  # two people: one is refused
    assert _retrieve(labels, photo_dir, tmp_path / "out") == ExitCode.INPUT
    error = capsys.readouterr().err
    # the progress bar of the photos comes first; then the error, one line
    assert error.splitlines()[-1].startswith("error: no face found in any of the 1 photos")
    assert "Traceback" not in error
