"""--columns: a CSV whose columns have other names (CACD-VS's file_a,file_b,same; FG-NET's file,age) is read
through a mapping, by the real readers; a bad mapping or a missing column is one line naming the file's columns."""

import pytest

import data_prep
import evaluate
import infer
from face_match_age.exit_codes import ExitCode
from face_match_age.files.column_mapping import LABEL_COLUMNS, PAIR_COLUMNS, parse_column_mapping
from face_match_age.inference.pair_specs import InputError, read_pairs_csv
from face_match_age.preparation.dataset_labels import MetadataError, read_user_csv
from loader import LabelsError, read_labels


def test_the_mapping_is_parsed_once_into_names_and_columns():
    assert parse_column_mapping("img1=file_a, img2 = file_b,label=same", PAIR_COLUMNS) == {
        "img1": "file_a",
        "img2": "file_b",
        "label": "same",
    }
    for text, why in (
        ("img1", "is not NAME=COLUMN"),
        ("img1=", "is not NAME=COLUMN"),
        ("photo=file_a", "'photo' is not a column name this CSV is read by; use img1, img2, label"),
        ("img1=a,img1=b", "img1 is given twice"),
        ("img1=a,img2=a", "column 'a' is given for both img1 and img2"),
    ):
        with pytest.raises(ValueError, match=why):
            parse_column_mapping(text, PAIR_COLUMNS)


def test_a_cacd_vs_pairs_file_is_read_with_columns(tmp_path):
    (tmp_path / "pairs.csv").write_text("file_a,file_b,same\na.jpg,b.jpg,1\nc.jpg,d.jpg,0\n")
    pairs = read_pairs_csv(tmp_path / "pairs.csv", {"img1": "file_a", "img2": "file_b", "label": "same"})
    assert [(p.img1, p.img2, p.label) for p in pairs] == [("a.jpg", "b.jpg", 1), ("c.jpg", "d.jpg", 0)]
    assert pairs[0].path1 == tmp_path / "a.jpg"
    table = evaluate._labelled_pairs(tmp_path / "pairs.csv", {"img1": "file_a", "img2": "file_b", "label": "same"})
    assert table["label"].tolist() == [1, 0]


def test_a_missing_or_unknown_column_is_one_line_naming_the_files_columns(tmp_path):
    (tmp_path / "pairs.csv").write_text("file_a,file_b,same\na.jpg,b.jpg,1\n")
    with pytest.raises(InputError) as error:
        read_pairs_csv(tmp_path / "pairs.csv", {"img1": "photo_a", "img2": "file_b"})
    message = str(error.value)
    assert "no column photo_a (--columns img1=photo_a)" in message
    assert "its columns are file_a, file_b, same" in message
    assert "\n" not in message
    with pytest.raises(InputError) as error:  # mapped img1 only: img2 still missing
        read_pairs_csv(tmp_path / "pairs.csv", {"img1": "file_a"})
    message = str(error.value)
    assert "lacks the column(s) img2" in message and "has file_a, file_b, same" in message
    assert "--columns img2=COLUMN" in message and "\n" not in message
    with pytest.raises(evaluate.EvaluationError, match=r"lacks the column.s. label"):
        evaluate._labelled_pairs(tmp_path / "pairs.csv", {"img1": "file_a", "img2": "file_b"})


def test_a_mapped_column_that_clashes_with_one_of_the_same_name_is_refused(tmp_path):
    (tmp_path / "pairs.csv").write_text("img1,file_a,img2\na.jpg,b.jpg,c.jpg\n")
    with pytest.raises(InputError, match="--columns maps file_a to img1, but line 1 names a column img1 too"):
        read_pairs_csv(tmp_path / "pairs.csv", {"img1": "file_a"})
    (tmp_path / "swapped.csv").write_text("img1,file_a\na.jpg,b.jpg\n")
    swapped = read_pairs_csv(tmp_path / "swapped.csv", {"img1": "file_a", "img2": "img1"})  # img1 is mapped too
    assert (swapped[0].img1, swapped[0].img2) == ("b.jpg", "a.jpg")


def test_fg_net_style_labels_are_read_with_columns(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("001A02.JPG", "001A05.JPG"):
        (images / name).write_bytes(b"")
    (tmp_path / "labels.csv").write_text(" file , years ,person\n001A02.JPG,2,1\n001A05.JPG,5,1\n")
    labels = read_labels(tmp_path / "labels.csv", images, {"name": "file", "age": "years"})
    assert labels[["name", "age"]].values.tolist() == [["001A02.JPG", 2], ["001A05.JPG", 5]]
    with pytest.raises(LabelsError, match=r"no column age_years .--columns age=age_years.; its columns are file"):
        read_labels(tmp_path / "labels.csv", images, {"name": "file", "age": "age_years"})
    user = read_user_csv(images, tmp_path / "labels.csv", {"name": "file", "age": "years", "identity": "person"})
    assert user.has_identity
    with pytest.raises(MetadataError, match=r"lacks the column.s. age; .* has file, years, person"):
        read_user_csv(images, tmp_path / "labels.csv", {"name": "file"})
    (tmp_path / "people.csv").write_text("file,person,taken\na.jpg,x,2004\nb.jpg,y,2010\n")
    table, by = evaluate._retrieval_table(
        tmp_path / "people.csv", {"name": "file", "identity": "person", "year": "taken"}
    )
    assert by == "year" and table["identity"].tolist() == ["x", "y"]


@pytest.mark.parametrize(
    ("main", "argv"),
    [
        (infer.main, ["--pairs", "p.csv", "out", "--columns", "photo=file_a"]),
        (evaluate.main, ["verify", "--pairs", "p.csv", "--out", "o", "--columns", "img1"]),
        (evaluate.main, ["age", "--out", "o", "--columns", "img1=file_a"]),
        (evaluate.main, ["retrieve", "--csv", "c.csv", "--images", "i", "--out", "o", "--columns", "name=a,name=b"]),
        (data_prep.main, ["--dataset", "csv", "--images", "i", "--csv", "c.csv", "--columns", "age"]),
    ],
)
def test_a_bad_columns_option_is_a_usage_error(main, argv, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--columns" in last, last


def test_columns_reach_the_readers_from_the_command_line(tmp_path, capsys):
    (tmp_path / "pairs.csv").write_text("file_a,file_b,same\na.jpg,b.jpg,1\n")
    code = infer.main(["--pairs", str(tmp_path / "pairs.csv"), str(tmp_path / "o"), "--columns", "img1=file_a"])
    assert code == infer.EXIT_INPUT
    assert "lacks the column(s) img2" in capsys.readouterr().err
    code = evaluate.main(
        ["verify", "--pairs", str(tmp_path / "pairs.csv"), "--out", str(tmp_path / "e"), "--columns", "img1=x"]
    )
    assert code == ExitCode.INPUT
    assert "no column x (--columns img1=x); its columns are file_a, file_b, same" in capsys.readouterr().err
    images = tmp_path / "photos"
    images.mkdir()
    (tmp_path / "labels.csv").write_text("file,years\na.jpg,3\n")
    argv = ["--dataset", "csv", "--images", str(images), "--csv", str(tmp_path / "labels.csv")]
    argv += ["--out", str(tmp_path / "prep"), "--data-root", str(tmp_path / "data"), "--columns", "name=file"]
    assert data_prep.main(argv) == ExitCode.INPUT
    assert "lacks the column(s) age" in capsys.readouterr().err
    assert LABEL_COLUMNS[:2] == ("name", "age")


def test_columns_belong_to_a_csv(capsys):
    with pytest.raises(SystemExit):
        infer.main(["a.jpg", "b.jpg", "out", "--columns", "img1=file_a"])
    assert "--columns (an option of pairs, not of compare)" in capsys.readouterr().err
