"""Figures that would mislead without a word (issue 19, part 4): a perfect score from nothing to rank, age
gaps of unstated origin, a threshold measured on too few pairs, CSV errors that name no file or line, and
splits with an empty side. Each case runs without a network: embeddings and scores are given."""

import json

import numpy as np
import pandas as pd
import pytest
from test_data_prep import _own_photos, _prep_csv

import evaluate
from face_match_age.evaluation import array_metrics, calibration
from face_match_age.exit_codes import ExitCode
from face_match_age.files.csv_tables import read_table

# --- retrieval: nothing to rank is undefined, not 1.0 ----------------------------------------------------


@pytest.fixture
def fake_embeddings(monkeypatch):
    """Each photo embedded as its person's direction plus a little noise, without any network."""
    direction = {}

    def embed(images, photos, config, device):
        rng = np.random.default_rng(0)
        rows = []
        for photo in photos:
            person = photo.split("_")[0]
            direction.setdefault(person, rng.normal(size=512))
            rows.append(direction[person] + 0.3 * rng.normal(size=512))
        return np.array(rows, dtype=np.float32), {}

    monkeypatch.setattr(evaluate, "_embed_photos", embed)


def _retrieve(tmp_path, rows, header="name,identity,year"):
    (tmp_path / "photos").mkdir(exist_ok=True)
    labels = tmp_path / "labels.csv"
    labels.write_text(header + "\n" + "".join(f"{','.join(map(str, row))}\n" for row in rows))
    out = tmp_path / "out"
    argv = ["retrieve", "--csv", str(labels), "--images", str(tmp_path / "photos"), "--out", str(out)]
    return evaluate.main([*argv, "--device", "cpu"]), out


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_retrieval_of_one_person_is_refused_not_a_perfect_map(tmp_path, fake_embeddings, capsys):
    code, out = _retrieve(tmp_path, [("a_1.jpg", "a", 2005), ("a_2.jpg", "a", 2011), ("a_3.jpg", "a", 2012)])
    assert code == ExitCode.INPUT
    error = _one_error_line(capsys)
    assert "labels.csv" in error and "one person (a)" in error and "at least two identities" in error
    assert not (out / "summary.json").exists()


def test_retrieval_whose_galleries_hold_nobody_else_is_refused(tmp_path, fake_embeddings, capsys):
    # a is in both groups, b only among the queries: a's gallery holds a alone, b's person is absent
    code, _ = _retrieve(tmp_path, [("a_1.jpg", "a", 2005), ("a_2.jpg", "a", 2011), ("b_1.jpg", "b", 2011)])
    assert code == ExitCode.INPUT
    assert "MAP and rank-k are undefined" in _one_error_line(capsys)


def test_a_gallery_of_one_person_leaves_its_pair_undefined_and_each_rank_has_its_chance(
    tmp_path, fake_embeddings, capsys
):
    rows = [("a_1.jpg", "a", 2005), ("b_1.jpg", "b", 2005), ("a_2.jpg", "a", 2008)]
    rows += [("a_3.jpg", "a", 2011), ("b_2.jpg", "b", 2011)]
    code, out = _retrieve(tmp_path, rows)
    assert code == 0
    pairs = json.loads((out / "summary.json").read_text())["pairs"]
    assert [(p["query_group"], p["gallery_group"]) for p in pairs] == [
        ("2008-2010", "2005-2007"),
        ("2011-2013", "2005-2007"),
        ("2011-2013", "2008-2010"),
    ]
    # 2011-2013 against 2008-2010: the gallery is a's photo alone, so any ranking would put it first
    lone = pairs[2]
    assert lone["map"] is None and lone["rank_1"] is None and lone["queries"] == 0
    assert lone["skipped_nobody_else_in_gallery"] == 1 and lone["skipped_person_not_in_gallery"] == 1
    assert "undefined" in lone["undefined"]
    # a gallery of a and b: a random ranking finds the query's person first half the time
    assert pairs[1]["queries"] == 2 and pairs[1]["chance_rank_1"] == pytest.approx(0.5)
    assert pairs[1]["chance_rank_5"] == pytest.approx(1.0)


# --- verify: where the age gaps came from ----------------------------------------------------------------


def _joined_summary(tmp_path, header, rows, age_gaps):
    """verification_summary of pairs whose similarities (and the age model's gaps) are given."""
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(header + "\n" + "".join(f"{','.join(map(str, row))}\n" for row in rows))
    results = tmp_path / "results.jsonl"
    lines = [
        {"pair_index": i, "verification": {"similarity": 0.9 if row[2] else 0.1}, "age_gap": gap, "error": None}
        for i, (row, gap) in enumerate(zip(rows, age_gaps))
    ]
    results.write_text("".join(json.dumps(line) + "\n" for line in lines))
    joined = evaluate._joined_results(results, evaluate._labelled_pairs(pairs))
    return evaluate.verification_summary(joined, 0.5)


PAIRS = [("a.jpg", "b.jpg", 1), ("a.jpg", "c.jpg", 0), ("c.jpg", "d.jpg", 1), ("b.jpg", "d.jpg", 0)]


def test_verify_without_ages_has_no_age_gap_bands_and_says_why(tmp_path):
    summary = _joined_summary(tmp_path, "img1,img2,label", PAIRS, [None] * 4)
    assert summary["age_gap_from"] == {evaluate.NO_GAP: 4}
    assert summary["by_age_gap"] is None
    assert "age1 and age2" in summary["by_age_gap_unavailable"] and "--ckpt" in summary["by_age_gap_unavailable"]


def test_verify_names_the_source_of_each_age_gap(tmp_path):
    predicted = _joined_summary(tmp_path, "img1,img2,label", PAIRS, [2.0, 7.0, 30.0, 12.0])
    assert predicted["age_gap_from"] == {evaluate.GAP_FROM_MODEL: 4}
    assert predicted["by_age_gap"]["20+"]["pairs"] == 1
    # ages in the CSV for three pairs, the fourth without: it falls back to the model's gap
    rows = [(*PAIRS[0], 30, 32), (*PAIRS[1], 30, 60), (*PAIRS[2], 20, 25), (*PAIRS[3], "", "")]
    mixed = _joined_summary(tmp_path, "img1,img2,label,age1,age2", rows, [None, None, None, 4.0])
    assert mixed["age_gap_from"] == {evaluate.GAP_FROM_CSV: 3, evaluate.GAP_FROM_MODEL: 1}


def test_tar_at_a_far_that_too_few_pairs_cannot_measure_is_not_reported(tmp_path):
    summary = _joined_summary(tmp_path, "img1,img2,label", PAIRS, [2.0, 7.0, 30.0, 12.0])
    assert (summary["same_person_pairs"], summary["different_person_pairs"]) == (2, 2)
    assert summary["tar_at_far_0.01"] is None  # 2 different-person pairs measure FAR 0 or 0.5, never 0.01
    assert summary["tar_at_far_0.01_unavailable"] == "only 2 different-person pairs; at least 100 measure FAR 0.01"
    assert summary["by_age_gap"]["0-5"]["different_person_pairs"] == 0


# --- calibration: the minimum count applies to the overall threshold too -------------------------------


def _pairs(negatives: int, positives: int = 50):
    rng = np.random.default_rng(1)
    scores = np.concatenate([rng.normal(0.7, 0.1, positives), rng.normal(0.2, 0.1, negatives)])
    labels = np.array([True] * positives + [False] * negatives)
    return scores, labels, np.full(len(scores), 3.0)


def test_an_overall_threshold_from_too_few_different_person_pairs_falls_back_and_says_so():
    scores, labels, gaps = _pairs(negatives=50)
    record = calibration.calibrate(scores, labels, gaps, 1e-2, fallback_threshold=0.42)
    overall = record["overall"]
    assert calibration.minimum_negatives(1e-2) == 100
    assert overall["fallback"] and overall["threshold"] == 0.42
    assert "only 50 different-person pairs; at least 100 are needed" in overall["reason"]
    # its far and tar are those of the threshold used, not of the unmeasurable FAR 0.0
    assert (overall["far"], overall["tar"]) == array_metrics.rates_at(0.42, scores, labels)
    assert record["bands"]["0-5"]["threshold"] == 0.42 and record["bands"]["0-5"]["fallback"]
    note = calibration.fallback_note(record)
    assert note.startswith("note: calibration: only 50") and "\n" not in note


def test_an_overall_threshold_from_enough_pairs_is_measured():
    scores, labels, gaps = _pairs(negatives=100)
    record = calibration.calibrate(scores, labels, gaps, 1e-2, fallback_threshold=0.42)
    assert not record["overall"]["fallback"] and record["overall"]["far"] <= 1e-2
    assert record["overall"]["threshold"] == array_metrics.threshold_at_far(scores, labels, 1e-2)
    assert calibration.fallback_note(record) is None


# --- CSV errors: file, column, line, what to do ---------------------------------------------------------


def test_a_retrieve_csv_with_a_word_for_a_year_names_file_column_and_line(tmp_path, capsys):
    code, _ = _retrieve(tmp_path, [("a_1.jpg", "a", 2005), ("b_1.jpg", "b", "abc")])
    assert code == ExitCode.INPUT
    error = _one_error_line(capsys)
    assert str(tmp_path / "labels.csv") in error
    assert "column year" in error and "line 3: 'abc'" in error and "write a number there" in error


def test_verify_ages_that_are_not_numbers_name_the_line_before_any_scoring(tmp_path, capsys):
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("img1,img2,label,age1,age2\na.jpg,b.jpg,1,30,32\na.jpg,c.jpg,0,thirty,40\n")
    assert evaluate.main(["verify", "--pairs", str(pairs), "--out", str(tmp_path / "out")]) == ExitCode.INPUT
    error = _one_error_line(capsys)
    assert "column age1" in error and "line 3: 'thirty'" in error


def test_header_names_are_read_without_their_surrounding_spaces(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("name, age ,identity\n007.jpg, 31,x\n")
    table = read_table(labels, ("name", "age"), ValueError, "labels file", numbers=("age",), dtype={"name": str})
    assert list(table.columns) == ["name", "age", "identity"]
    assert table.at[0, "name"] == "007.jpg" and table.at[0, "age"] == 31


def test_lines_are_counted_as_a_spreadsheet_shows_them_blank_lines_included(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text('name,age\na.jpg,3\n\n"b\nc.jpg",4\nd.jpg,x\n')
    with pytest.raises(ValueError, match=r"column age: 1 value\(s\) are not numbers \(line 5: 'x'\)"):
        read_table(labels, ("name", "age"), ValueError, "labels file", numbers=("age",))


def test_a_row_longer_than_the_header_is_refused_not_shifted(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("name,age\na.jpg,3\nb,c.jpg,4\n")  # pandas would take the first row's 'a.jpg' as a label
    with pytest.raises(ValueError, match=r"more cells than the 2 columns line 1 names \(line 3: 3\)"):
        read_table(labels, ("name", "age"), ValueError, "labels file")


# --- data_prep: no split with an empty side ----------------------------------------------------------------


def test_one_person_is_not_split_into_an_empty_val(tmp_path, capsys):
    folder = _own_photos(tmp_path, [{"name": f"p{i}.jpg", "age": 30 + i, "identity": "star"} for i in range(4)])
    assert _prep_csv(tmp_path, folder, "--no-detect") == ExitCode.INPUT
    error = _one_error_line(capsys)
    assert "labels.csv" in error and "one person (star)" in error and "at least two people" in error
    assert not (tmp_path / "prepared" / "val.csv").exists()


def test_one_photo_without_identities_is_not_split(tmp_path, capsys):
    folder = _own_photos(tmp_path, [{"name": "p0.jpg", "age": 30}])
    assert _prep_csv(tmp_path, folder, "--no-detect") == ExitCode.INPUT
    assert "only 1 usable photo" in _one_error_line(capsys)


def test_a_val_split_emptied_by_cropping_is_refused(tmp_path, capsys):
    rows = [{"name": f"p{i}.jpg", "age": 20 + 5 * i, "identity": f"id{i}"} for i in range(10)]
    folder = _own_photos(tmp_path, rows)
    assert _prep_csv(tmp_path, folder, "--no-detect", "--out", tmp_path / "first") == 0
    for name in pd.read_csv(tmp_path / "first" / "val.csv")["name"]:
        (folder / name).write_bytes(b"damaged since")
    capsys.readouterr()
    assert _prep_csv(tmp_path, folder, "--no-detect") == ExitCode.INPUT
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "none of the 2 val photos kept a face (dropped in both splits: unreadable image: 2)" in error
    assert not (tmp_path / "prepared" / "val.csv").exists()
