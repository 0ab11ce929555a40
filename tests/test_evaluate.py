import csv
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from synthetic import band_calibration, make_dataset, write_band_calibration

import evaluate
import infer
from face_match_age.evaluation import array_metrics
from face_match_age.exit_codes import ExitCode
from face_match_age.match_rule import age_gap_band
from face_match_age.reports import evaluation_sheets
from face_match_age.reports.contact_sheet import Tile, contact_sheet


def _is_png(path):
    with Image.open(path) as picture:
        picture.load()
        return picture.format == "PNG" and picture.width > 100


def test_age_evaluation_writes_metrics_predictions_and_plot(tmp_path, age_checkpoint, capsys):
    config = make_dataset(tmp_path / "data", train=2, val=12, size=160)
    out = tmp_path / "eval"
    assert (
        evaluate.main(
            [
                "age",
                "--images",
                str(config.val_dir),
                "--csv",
                str(config.val_csv),
                "--ckpt",
                str(age_checkpoint),
                "--out",
                str(out),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    predictions = pd.read_csv(out / "predictions.csv")
    assert len(predictions) == summary["faces"] == 12
    assert summary["mae"] == pytest.approx(array_metrics.mae(predictions["predicted"], predictions["age"]), abs=1e-3)
    assert summary["cs5"] == pytest.approx(
        array_metrics.cumulative_score(predictions["predicted"], predictions["age"]), abs=1e-4
    )
    inside = (predictions["interval_low"] <= predictions["age"]) & (predictions["age"] <= predictions["interval_high"])
    assert summary["interval_coverage"] == pytest.approx(inside.mean(), abs=1e-4)
    decade_faces = sum(d["faces"] for d in summary["per_decade"].values())
    assert decade_faces == 12
    assert all("bias" in d for d in summary["per_decade"].values())
    assert _is_png(out / "predicted_vs_true.png")
    printed = capsys.readouterr().out
    assert printed.startswith("12 faces\n")  # a short table; summary.json holds every figure
    assert f"all figures: {out / 'summary.json'}" in printed
    assert re.findall(r"\d\.\d{5,}", printed) == []  # no float printed with more than 4 decimals


@pytest.fixture
def labelled_pairs(photo_dir, tmp_path):
    from dataset_archives import face_photo_folder

    folder = face_photo_folder(tmp_path / "pairs", photo_dir / "coffee.jpg")
    rows = [
        ("face0.jpg", "face1.jpg", 1, 30, 32),
        ("face2.jpg", "face3.jpg", 1, 20, 50),
        ("face0.jpg", "face4.jpg", 0, 30, 36),
        ("face1.jpg", "face5.jpg", 0, 32, 60),
        ("face2.jpg", "face5.jpg", 0, 20, 60),
        ("face3.jpg", "face4.jpg", 1, 50, 36),
        ("face4.jpg", "coffee.jpg", 0, 36, 40),
    ]
    with open(folder / "pairs.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["img1", "img2", "label", "age1", "age2"])
        writer.writerows(rows)
    return folder


def test_verification_evaluation_and_calibration(labelled_pairs, tmp_path, torch_home_with_vggface2, capsys):
    out = tmp_path / "verify"
    assert (
        evaluate.main(
            [
                "verify",
                "--pairs",
                str(labelled_pairs / "pairs.csv"),
                "--out",
                str(out),
                "--calibrate",
                "--target-far",
                "0.5",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pairs"] == 7
    assert summary["scored_pairs"] == 6
    assert summary["pairs_without_a_face"] == 1
    assert "no face found" in summary["failure_examples"][0]
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    scored = [r for r in results if r["verification"]]
    labels = [int(pd.read_csv(labelled_pairs / "pairs.csv").at[r["pair_index"], "label"]) for r in scored]
    scores = [r["verification"]["similarity"] for r in scored]
    assert summary["roc_auc"] == pytest.approx(array_metrics.roc_auc(scores, labels))
    assert summary["eer"] == pytest.approx(array_metrics.equal_error_rate(scores, labels))
    assert set(summary["age_gap_from"]) == {evaluate.GAP_FROM_CSV}
    bands = summary["by_age_gap"]
    # gaps of the scored pairs: 2, 30, 6, 28, 40, 14 (the coffee pair has no face to score)
    assert [bands[name]["pairs"] for name in ("0-5", "5-10", "10-20", "20+")] == [1, 1, 1, 3]
    assert _is_png(out / "roc.png")
    calibration = json.loads((out / "calibration.json").read_text())
    assert calibration["target_far"] == 0.5
    assert calibration["overall"]["far"] <= 0.5


def test_infer_uses_the_band_of_the_predicted_age_gap(run_infer_with_calibration):
    result, calibration = run_infer_with_calibration()
    band = age_gap_band(result["age_gap"])
    assert result["verification"]["threshold_used"] == calibration["bands"][band]["threshold"]
    assert result["verification"]["threshold_source"]["band"] == band
    assert result["verification"]["is_match"] == (
        result["verification"]["similarity"] > calibration["bands"][band]["threshold"]
    )


def test_infer_without_ages_uses_the_overall_calibrated_threshold(run_infer_with_calibration):
    result, calibration = run_infer_with_calibration("--no-age")
    assert result["verification"]["threshold_used"] == calibration["overall"]["threshold"]
    assert "overall" in result["verification"]["threshold_source"]["reason"]


@pytest.fixture
def run_infer_with_calibration(tmp_path, photo_dir, torch_home_with_vggface2, age_checkpoint):
    calibration = band_calibration()
    write_band_calibration(tmp_path)

    def run(*extra):
        code = infer.main(
            [
                str(photo_dir / "astronaut.jpg"),
                str(photo_dir / "astronaut_edit.jpg"),
                str(tmp_path / "out"),
                "--json",
                "--ckpt",
                str(age_checkpoint),
                "--calibration",
                str(tmp_path / "calibration.json"),
                *extra,
            ]
        )
        assert code == 0
        return json.loads((tmp_path / "out" / "astronaut_vs_astronaut_edit_data.json").read_text()), calibration

    return run


def test_a_broken_calibration_file_is_an_input_error(tmp_path, photo_dir, capsys):
    (tmp_path / "cal.json").write_text("{}")
    code = infer.main(
        [
            str(photo_dir / "astronaut.jpg"),
            str(photo_dir / "astronaut.jpg"),
            str(tmp_path / "o"),
            "--calibration",
            str(tmp_path / "cal.json"),
        ]
    )
    assert code == infer.EXIT_INPUT
    assert "not a calibration file" in capsys.readouterr().err


def test_leakage_reports_people_in_both_sets(tmp_path, capsys):
    pd.DataFrame({"name": ["a", "b", "c"], "age": [1, 2, 3], "identity": ["x", "y", "z"]}).to_csv(tmp_path / "t.csv")
    pd.DataFrame({"name": ["d", "e"], "age": [1, 2], "identity": ["y", "w"]}).to_csv(tmp_path / "v.csv")
    assert (
        evaluate.main(["leakage", "--train-csv", str(tmp_path / "t.csv"), "--val-csv", str(tmp_path / "v.csv")])
        == ExitCode.CHECK_FAILED
    )
    report = json.loads(capsys.readouterr().out)
    assert report["shared_identities"] == 1
    assert report["examples"] == ["y"]
    assert report["val_images_of_shared_people"] == 1
    pd.DataFrame({"name": ["d"], "age": [1], "identity": ["w"]}).to_csv(tmp_path / "v.csv")
    assert evaluate.main(["leakage", "--train-csv", str(tmp_path / "t.csv"), "--val-csv", str(tmp_path / "v.csv")]) == 0


def test_labels_must_be_zero_or_one(labelled_pairs, tmp_path, capsys):
    table = pd.read_csv(labelled_pairs / "pairs.csv")
    table.loc[2, "label"] = 7
    table.to_csv(labelled_pairs / "pairs.csv", index=False)
    assert (
        evaluate.main(["verify", "--pairs", str(labelled_pairs / "pairs.csv"), "--out", str(tmp_path / "o")])
        == ExitCode.INPUT
    )
    assert "line 4: 7" in capsys.readouterr().err


def _write_pairs(folder, rows):
    with open(folder / "pairs.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["img1", "img2", "label", "age1", "age2"])
        writer.writerows(rows)
    return folder / "pairs.csv"


@pytest.mark.parametrize("label", [0, 1])
def test_pairs_of_one_class_are_refused_before_scoring(labelled_pairs, tmp_path, label, capsys):
    pairs = _write_pairs(
        labelled_pairs, [("face0.jpg", "face1.jpg", label, 30, 32), ("face2.jpg", "face3.jpg", label, 20, 50)]
    )
    out = tmp_path / "verify"
    assert (
        evaluate.main(["verify", "--pairs", str(pairs), "--out", str(out), "--calibrate", "--device", "cpu"])
        == ExitCode.INPUT
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"all 2 pairs are labelled {label}" in err
    assert "need pairs of both kinds" in err
    assert f"add pairs labelled {1 - label}" in err
    assert not (out / "calibration.json").exists()


def test_pairs_whose_faces_leave_one_class_are_refused_and_name_the_photos(
    labelled_pairs, tmp_path, torch_home_with_vggface2, capsys
):
    # Every different-person pair involves the coffee photo, where no face is found.
    pairs = _write_pairs(
        labelled_pairs,
        [
            ("face0.jpg", "face1.jpg", 1, 30, 32),
            ("face2.jpg", "face3.jpg", 1, 20, 50),
            ("face4.jpg", "coffee.jpg", 0, 36, 40),
        ],
    )
    out = tmp_path / "verify"
    assert (
        evaluate.main(["verify", "--pairs", str(pairs), "--out", str(out), "--calibrate", "--device", "cpu"])
        == ExitCode.INPUT
    )
    err = capsys.readouterr().err.splitlines()[-1]
    assert "all 2 pairs are labelled 1 (same person) among the pairs where both faces were found" in err
    assert "1 pairs lacked a face" in err
    assert "coffee.jpg" in err
    assert "add pairs labelled 0" in err
    assert not (out / "calibration.json").exists()
    assert not (out / "summary.json").exists()


def test_figures_use_the_exact_similarities_results_jsonl_holds(
    labelled_pairs, tmp_path, torch_home_with_vggface2, monkeypatch
):
    from face_match_age.inference import analyzer

    real = analyzer.cosine_similarity
    # Similarities that differ only after the 4th decimal: rounded, every pair would tie at 0.5 (AUC 0.5).
    monkeypatch.setattr(analyzer, "cosine_similarity", lambda a, b: 0.5 + 1e-6 * real(a, b))
    out = tmp_path / "verify"
    assert (
        evaluate.main(["verify", "--pairs", str(labelled_pairs / "pairs.csv"), "--out", str(out), "--device", "cpu"])
        == 0
    )
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    exact = {r["pair_index"]: r["verification"]["similarity"] for r in results if r["verification"]}
    assert len(set(exact.values())) == 6  # JSON keeps every digit; only the tables round
    table = pd.read_csv(out / "results.csv").dropna(subset=["similarity"])
    assert set(table["similarity"]) == {0.5}  # 4 decimals, for people
    similarities = pd.read_csv(out / "similarities.csv").dropna(subset=["similarity"])
    assert len(similarities) == 6
    assert similarities["similarity"].nunique() == 6
    assert dict(zip(similarities["pair_index"], similarities["similarity"])) == pytest.approx(exact, abs=1e-9)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["roc_auc"] == pytest.approx(array_metrics.roc_auc(similarities["similarity"], similarities["label"]))
    assert summary["eer"] == pytest.approx(
        array_metrics.equal_error_rate(similarities["similarity"], similarities["label"])
    )


def test_tiny_photos_in_pairs_are_counted_as_without_a_face(labelled_pairs, tmp_path, torch_home_with_vggface2):
    # 1x1 and 19x19 are too small for MTCNN at all; 4000x40 is shrunk to 1600x16 for detection.
    for name, size in (("dot.png", (1, 1)), ("icon.png", (19, 19)), ("banner.png", (4000, 40))):
        Image.new("RGB", size, (128, 128, 128)).save(labelled_pairs / name)
    table = pd.read_csv(labelled_pairs / "pairs.csv")
    extra = pd.DataFrame(
        [
            ("face0.jpg", "dot.png", 0, 30, 40),
            ("icon.png", "face1.jpg", 0, 20, 32),
            ("banner.png", "face2.jpg", 1, 20, 20),
        ],
        columns=table.columns,
    )
    pd.concat([table, extra]).to_csv(labelled_pairs / "pairs.csv", index=False)
    out = tmp_path / "verify"
    assert (
        evaluate.main(["verify", "--pairs", str(labelled_pairs / "pairs.csv"), "--out", str(out), "--device", "cpu"])
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pairs"] == 10
    assert summary["scored_pairs"] == 6
    assert summary["pairs_without_a_face"] == 4
    for name in ("dot.png", "icon.png", "banner.png", "coffee.jpg"):
        assert sum(name in failure for failure in summary["failures"]) == 1, name


def test_leakage_without_identities_says_it_cannot_check(tmp_path, capsys):
    pd.DataFrame({"name": ["a", "b"], "age": [1, 2], "identity": ["", None]}).to_csv(tmp_path / "t.csv", index=False)
    pd.DataFrame({"name": ["d"], "age": [1]}).to_csv(tmp_path / "v.csv", index=False)
    assert (
        evaluate.main(["leakage", "--train-csv", str(tmp_path / "t.csv"), "--val-csv", str(tmp_path / "v.csv")])
        == ExitCode.INPUT
    )
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "cannot check for people in both sets" in captured.err
    assert str(tmp_path / "t.csv") in captured.err
    assert captured.err.count("\n") == 1


def test_leakage_counts_the_rows_it_could_not_check(tmp_path, capsys):
    pd.DataFrame({"name": ["a", "b", "c"], "age": [1, 2, 3], "identity": ["x", None, "z"]}).to_csv(tmp_path / "t.csv")
    pd.DataFrame({"name": ["d", "e"], "age": [1, 2], "identity": ["w", None]}).to_csv(tmp_path / "v.csv")
    assert evaluate.main(["leakage", "--train-csv", str(tmp_path / "t.csv"), "--val-csv", str(tmp_path / "v.csv")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["shared_identities"] == 0
    assert report["train_images_without_identity"] == 1
    assert report["val_images_without_identity"] == 1


def test_ctrl_c_while_scoring_ends_with_one_line(
    labelled_pairs, tmp_path, torch_home_with_vggface2, monkeypatch, capsys
):
    from face_match_age.inference import batch

    def interrupted(*args, **kwargs):
        raise batch.BatchInterrupted(tmp_path / "verify" / "results.jsonl", 3)

    monkeypatch.setattr(batch, "run_batch", interrupted)
    assert (
        evaluate.main(
            [
                "verify",
                "--pairs",
                str(labelled_pairs / "pairs.csv"),
                "--out",
                str(tmp_path / "verify"),
                "--device",
                "cpu",
            ]
        )
        == evaluate.EXIT_INTERRUPTED
    )
    err = capsys.readouterr().err
    assert (
        err == f"interrupted: 3 scored pairs kept in {tmp_path / 'verify' / 'results.jsonl'}; run the same "
        "command again to resume\n"
    )


def test_a_rerun_into_the_same_folder_resumes_with_the_same_figures_and_no_photo_read(
    labelled_pairs, tmp_path, torch_home_with_vggface2, capsys, monkeypatch
):
    out = tmp_path / "verify"
    command = ["verify", "--pairs", str(labelled_pairs / "pairs.csv"), "--out", str(out), "--device", "cpu"]
    assert evaluate.main(command) == 0
    first = pd.read_csv(out / "similarities.csv")
    from face_match_age.inference import analyzer

    read = []
    monkeypatch.setattr(analyzer, "load_image", read.append)
    assert evaluate.main(command) == 0  # every pair is already in results.jsonl, with its exact similarity
    assert "resuming: 7 of 7 pairs" in capsys.readouterr().out
    assert read == []  # no second pass over the photos for unrounded similarities
    pd.testing.assert_frame_equal(pd.read_csv(out / "similarities.csv"), first, check_exact=True)


def test_age_evaluation_reads_the_val_split_of_data_dir(tmp_path, age_checkpoint):
    make_dataset(tmp_path / "data", train=2, val=5, size=160)
    out = tmp_path / "eval"
    argv = ["age", "--data-dir", str(tmp_path / "data"), "--ckpt", str(age_checkpoint), "--out", str(out)]
    assert evaluate.main([*argv, "--device", "cpu"]) == 0
    assert json.loads((out / "summary.json").read_text())["csv"] == str(tmp_path / "data" / "val.csv")


def test_leakage_reads_both_csvs_of_data_dir(tmp_path, capsys):
    pd.DataFrame({"name": ["a"], "age": [1], "identity": ["x"]}).to_csv(tmp_path / "train.csv", index=False)
    pd.DataFrame({"name": ["b"], "age": [2], "identity": ["x"]}).to_csv(tmp_path / "val.csv", index=False)
    assert evaluate.main(["leakage", "--data-dir", str(tmp_path)]) == ExitCode.CHECK_FAILED
    assert json.loads(capsys.readouterr().out)["shared_identities"] == 1


def _decoded_size(path):
    with Image.open(path) as picture:
        picture.load()
        return picture.size


def _sheet_size(tiles, faces_per_tile, columns):
    return contact_sheet([Tile([None] * faces_per_tile)] * tiles, title="a title", columns=columns).size


def test_verify_writes_its_figures_and_sheets_of_a_bounded_size(
    labelled_pairs, tmp_path, torch_home_with_vggface2, monkeypatch
):
    # 3 scored pairs of each kind, above a limit of 2 tiles: each sheet shows 2
    monkeypatch.setattr(evaluation_sheets, "WORST_CASES", 2)
    out = tmp_path / "verify"
    argv = ["verify", "--pairs", str(labelled_pairs / "pairs.csv"), "--out", str(out), "--device", "cpu"]
    assert evaluate.main(argv) == 0
    assert _decoded_size(out / "roc.png") == (780, 660)
    assert _decoded_size(out / "similarity_histogram.png") == (780, 540)
    two_pairs = _sheet_size(2, 2, evaluation_sheets.PAIR_COLUMNS)
    assert _decoded_size(out / "worst_false_accepts.jpg") == two_pairs
    assert _decoded_size(out / "worst_false_rejects.jpg") == two_pairs


def test_verify_summary_lists_every_file_it_wrote(labelled_pairs, tmp_path, torch_home_with_vggface2):
    out = tmp_path / "verify"
    argv = ["verify", "--pairs", str(labelled_pairs / "pairs.csv"), "--out", str(out), "--calibrate"]
    assert evaluate.main([*argv, "--device", "cpu"]) == 0
    files = json.loads((out / "summary.json").read_text())["files"]
    assert sorted(Path(path).name for path in files.values()) == [
        "batch.json",
        "calibration.json",
        "config.json",
        "results.csv",
        "results.jsonl",
        "roc.png",
        "similarities.csv",
        "similarity_histogram.png",
        "summary.json",
        "worst_false_accepts.jpg",
        "worst_false_rejects.jpg",
    ]
    assert all(Path(path).is_file() for path in files.values())


def test_age_writes_its_figure_and_a_sheet_of_a_bounded_size(tmp_path, age_checkpoint, monkeypatch):
    monkeypatch.setattr(evaluation_sheets, "WORST_CASES", 5)  # below the 12 faces evaluated
    config = make_dataset(tmp_path / "data", train=2, val=12, size=160)
    out = tmp_path / "eval"
    argv = ["age", "--images", str(config.val_dir), "--csv", str(config.val_csv), "--ckpt", str(age_checkpoint)]
    assert evaluate.main([*argv, "--out", str(out), "--device", "cpu"]) == 0
    assert _decoded_size(out / "predicted_vs_true.png") == (1200, 540)
    assert _decoded_size(out / "largest_age_errors.jpg") == _sheet_size(5, 1, evaluation_sheets.FACE_COLUMNS)
    files = json.loads((out / "summary.json").read_text())["files"]
    assert sorted(Path(path).name for path in files.values()) == [
        "largest_age_errors.jpg",
        "predicted_vs_true.png",
        "predictions.csv",
        "summary.json",
    ]


def test_the_console_shows_headline_figures_at_four_decimals_at_most():
    long = 0.5233333110809326
    verify = {
        "pairs": 7,
        "scored_pairs": 6,
        "pairs_without_a_face": 1,
        "threshold": 0.7,
        "same_person_pairs": 3,
        "different_person_pairs": 3,
        **dict.fromkeys(["roc_auc", "eer", "accuracy_at_threshold", "best_threshold", "best_accuracy"], long),
        "tar_at_far_0.01": None,
        "by_age_gap": {"0-5": {"pairs": 4, "roc_auc": 1.0, "same_person_pairs": 2, "different_person_pairs": 2}},
        "files": {"summary": "out/summary.json"},
    }
    printed = evaluate.headline_table("verify", verify)
    assert "ROC AUC" in printed and "0.5233" in printed and "gap 0-5" in printed
    assert "TAR at FAR 0.01" in printed and "n/a" in printed  # unmeasurable: said, not a number
    retrieve = {
        "photos": 10,
        "photos_without_a_face": 0,
        "grouped_by": "year",
        "by_gap": [{"gap": 3.0, "queries": 5, "map": long, "rank_1": 0.8, "rank_5": 1.0, "chance_rank_1": 0.2}],
        "files": {"summary": "out/summary.json"},
    }
    for table in (printed, evaluate.headline_table("retrieve", retrieve)):
        assert re.findall(r"\d\.\d{5,}", table) == []
        assert table.endswith("all figures: out/summary.json")
    assert [evaluate.figure_text(v) for v in (long, 20.0, -3.25, None, 12)] == ["0.5233", "20", "-3.25", "n/a", "12"]
