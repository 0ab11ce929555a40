"""The one result schema (face_match_age/inference/records.py): every table's columns are its fields, numbers are
rounded only where a table writes them, the field tables of docs/inference.md are the schema's, stores written in
an older layout are refused in one line, and the settings that change a result are declared once, on the config
fields, and read by every store that is resumed or reused."""

import csv
import dataclasses
import json
from pathlib import Path

import pytest

import data_prep
import train
from config import Config, setting, settings_that_change
from face_match_age.files import embedding_store
from face_match_age.files.output_files import OutputError, write_json
from face_match_age.inference import batch, folder_embedding, folder_matches, records
from face_match_age.inference.records import FaceResult, PairResult, Verification
from face_match_age.match_rule import MatchRule

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- result-schema: begin", "<!-- result-schema: end -->"


def _pair(similarity=0.123456789, age_1=30.123456, age_2=41.987654) -> PairResult:
    faces = [
        FaceResult((1, 2, 30, 40), 0.99987654, 1, age, 2.345678, (age - 3.04, age + 3.06)) for age in (age_1, age_2)
    ]
    return PairResult(
        "a.jpg", "b.jpg", *faces, Verification(similarity > 0.1, similarity, 0.1), abs(age_1 - age_2), None
    )


def test_the_documented_field_tables_are_the_schemas():
    text = (ROOT / "docs" / "inference.md").read_text(encoding="utf-8")
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    block = text[text.index(BEGIN) : text.index(END)].split("\n", 1)[1].strip()
    assert block == records.markdown_tables(), (
        "docs/inference.md's result tables differ from face_match_age/inference/records.py: paste the output of "
        "records.markdown_tables() between its result-schema markers"
    )


def test_every_column_of_every_table_is_a_field_of_the_schema():
    tables = [records.RESULTS_CSV_COLUMNS, records.FACES_CSV_COLUMNS, records.FACES_CSV_EXTRA]
    for column in [*tables[0], *tables[1], *tables[2], *records.MATCHES_CSV_COLUMNS]:
        records.column_field(column)  # raises for a name the schema lacks
    with pytest.raises(ValueError, match="not a field of the result schema"):
        records.column_field("similarity_score")
    # A pair's table is its record flattened: its columns are the record's, plus where the pair comes from.
    flattened = set(_pair().to_row())
    assert set(records.RESULTS_CSV_COLUMNS) - flattened == {"pair_index", "label"}
    assert set(records.MATCHES_CSV_COLUMNS) <= flattened
    assert set(records.FACES_CSV_COLUMNS) - set(records.FACE_FIELDS) == {"file", "error"}
    # The embedding store keeps a photo's face under the schema's names (it does not import inference).
    assert embedding_store.FACE_FIELDS == records.FACE_FIELDS


def test_one_name_for_one_quantity_across_the_tables():
    assert records.column_field("age_1") == records.column_field("age")
    assert records.column_field("box_2") == records.column_field("box")
    columns = {*records.RESULTS_CSV_COLUMNS, *records.FACES_CSV_COLUMNS, *records.MATCHES_CSV_COLUMNS}
    assert not columns & {"age_prediction", "bbox", "uncertainty", "similarity_score", "img1", "image_1", "path_1"}


def test_json_keeps_numbers_exact_and_tables_round_them_to_the_fields_digits():
    pair = _pair()
    data = pair.to_json()
    assert data["verification"]["similarity"] == 0.123456789
    assert data["face_1"]["age"] == 30.123456
    assert records.pair_from_json(json.loads(json.dumps(data))) == pair  # what results.jsonl reads back
    row = dict(zip(records.RESULTS_CSV_COLUMNS, records.table_row(records.RESULTS_CSV_COLUMNS, pair.to_row())))
    assert row["similarity"] == 0.1235
    assert (row["age_1"], row["age_std_2"], row["age_gap"]) == (30.12, 2.35, 11.86)
    assert row["box_1"] == "1 2 30 40"
    assert row["pair_index"] == ""  # not given: empty, as null is
    assert records.cell("age_interval", (27.083456, 33.18)) == "27.1 33.2"


def test_a_failed_pair_has_null_faces_and_verdict_in_json_and_empty_cells_in_a_table():
    failed = PairResult("a.jpg", "b.jpg", None, None, None, None, "no face found in b.jpg")
    assert failed.to_json() == {
        "file_1": "a.jpg",
        "file_2": "b.jpg",
        "face_1": None,
        "face_2": None,
        "verification": None,
        "age_gap": None,
        "error": "no face found in b.jpg",
    }
    cells = records.table_row(records.RESULTS_CSV_COLUMNS, failed.to_row())
    assert cells[-1] == "no face found in b.jpg" and set(cells[3:-1]) == {""}


def test_the_batch_and_folder_tables_are_written_with_the_schemas_columns(tmp_path):
    row = {"pair_index": 0, "label": 1, **_pair().to_json(), "age_model": None, "worker_ranks": [0, 0]}
    batch._write_rows(tmp_path, [json.dumps(row)])
    with open(tmp_path / batch.RESULTS_CSV, newline="") as handle:
        header, written = list(csv.reader(handle))
    assert tuple(header) == records.RESULTS_CSV_COLUMNS
    assert dict(zip(header, written))["similarity"] == "0.1235"
    assert json.loads((tmp_path / batch.RESULTS_JSONL).read_text())["verification"]["similarity"] == 0.123456789

    face = {"file": "x.jpg", **_pair().face_1.to_json()}
    folder_matches.write_faces_csv(
        tmp_path / "faces.csv", [face, {"file": "y.jpg", "error": "no face"}], {"cluster": [0, None]}
    )
    with open(tmp_path / "faces.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert tuple(table[0]) == (*records.FACES_CSV_COLUMNS, "cluster")
    assert table[0] | {} == {
        "file": "x.jpg",
        "box": "1 2 30 40",
        "detection_probability": "0.9999",
        "faces_found": "1",
        "age": "30.12",
        "age_std": "2.35",
        "error": "",
        "cluster": "0",
    }
    assert table[1]["error"] == "no face" and table[1]["box"] == "" and table[1]["cluster"] == ""


def test_a_batch_written_in_the_older_layout_is_refused_in_one_line(tmp_path):
    (tmp_path / batch.RESULTS_JSONL).write_text('{"pair_index": 0, "img1": "a.jpg"}\n')
    identity = batch.batch_identity([], Config(), MatchRule(0.7), False)
    old = {key: value for key, value in identity.items() if key != "schema"}  # batch.json before the schema
    write_json(tmp_path / batch.MANIFEST, old)
    with pytest.raises(OutputError) as refused:
        batch._refuse_another_batch(tmp_path, identity)
    message = str(refused.value)
    assert "\n" not in message
    assert "older version" in message and "schema 1, this version writes 2" in message
    assert "choose a new OUT_DIR" in message


def test_an_embedding_store_written_in_the_older_layout_is_refused_in_one_line(tmp_path):
    store = tmp_path / "out" / folder_embedding.STORE_FOLDER
    embedding_store.EmbeddingStore(store).append([{"file": "a.jpg", "error": "no face"}], [None])
    settings = folder_embedding.embedding_settings(Config(), {"tta": False})
    write_json(store / folder_embedding.SETTINGS_FILE, {k: v for k, v in settings.items() if k != "schema"})
    with pytest.raises(OutputError) as refused:
        folder_embedding.open_store(tmp_path / "out", settings)
    message = str(refused.value)
    assert "\n" not in message and "older version" in message
    assert f"choose a new OUT_DIR, or delete {store} to embed again" in message


# --- the settings that change a result: declared once, on the config fields -------------------------------


def test_every_store_records_the_settings_its_results_depend_on_and_no_hand_kept_list():
    faces, verdicts = settings_that_change("faces"), settings_that_change("verdicts")
    assert {"img_size", "mtcnn_margin", "inference_precision", "channels_last"} <= set(faces)
    assert verdicts == ("verification_threshold",)
    assert "inference_batch_size" not in faces  # it changes how fast, not what
    identity = batch.batch_identity([], Config(), MatchRule(0.7), False)
    assert set(faces + verdicts) <= set(identity)
    assert set(faces) <= set(folder_embedding.embedding_settings(Config(), {}))
    assert not set(verdicts) & set(folder_embedding.embedding_settings(Config(), {}))  # the search is redone


def test_a_setting_declared_to_change_results_reaches_every_store(monkeypatch, tmp_path):
    """Declaring a field's kinds is what puts it in the stores: here the detection margin, moved off every kind,
    leaves them all, and declared to change faces, joins the batch's and the embedding store's records."""
    margin = next(f for f in dataclasses.fields(Config) if f.name == "mtcnn_margin")
    monkeypatch.setattr(margin, "metadata", {**margin.metadata, "changes": frozenset()})
    assert "mtcnn_margin" not in batch.batch_identity([], Config(), MatchRule(0.7), False)
    assert "mtcnn_margin" not in folder_embedding.embedding_settings(Config(), {})
    assert "mtcnn_margin" not in data_prep._fingerprint(_PrepArgs, Config())
    monkeypatch.setattr(margin, "metadata", {**margin.metadata, "changes": frozenset({"faces", "training"})})
    assert "mtcnn_margin" in batch.batch_identity([], Config(), MatchRule(0.7), False)
    assert "mtcnn_margin" in folder_embedding.embedding_settings(Config(), {})
    recorded = {"hyper_parameters": {"mtcnn_margin": 20}}
    assert "mtcnn_margin 20 (this command: 14)" in train._settings_problem(recorded, Config(), tmp_path / "x.ckpt")


class _PrepArgs:
    dataset, limit, archive, images, url, csv, no_detect = "utkface", None, None, None, None, None, False


def test_data_prep_and_train_read_the_declarations(tmp_path):
    fingerprint = data_prep._fingerprint(_PrepArgs, Config())
    assert set(settings_that_change("crops")) <= set(fingerprint)
    assert data_prep._fingerprint(_PrepArgs, Config(mtcnn_min_face_size=30)) != fingerprint
    recorded = {"hyper_parameters": {name: getattr(Config(), name) for name in settings_that_change("training")}}
    recorded["hyper_parameters"]["label_sigma"] = 3.0
    problem = train._settings_problem(recorded, Config(), tmp_path / "last.ckpt")
    assert "label_sigma 3.0 (this command: 2.0)" in problem


def test_unknown_result_kinds_are_refused():
    with pytest.raises(ValueError, match="unknown result kind 'face'"):
        settings_that_change("face")
    with pytest.raises(ValueError, match="unknown result kind 'everything'"):
        setting(1, "a reason", group="data", changes=("everything",))
