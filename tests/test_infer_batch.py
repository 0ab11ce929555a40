import csv
import json
import shutil

import pytest

import infer
from face_match_age import cli
from face_match_age.detection import imaging


@pytest.fixture
def pairs_dir(photo_dir, tmp_path):
    """A folder of photos with a pairs CSV using paths relative to the CSV's folder."""
    folder = tmp_path / "my pairs"
    (folder / "imgs").mkdir(parents=True)
    for name in ("astronaut.jpg", "astronaut_edit.jpg", "coffee.jpg", "two_people.jpg"):
        shutil.copy(photo_dir / name, folder / "imgs" / name)
    rows = [
        ("imgs/astronaut.jpg", "imgs/astronaut_edit.jpg", 1),
        ("imgs/astronaut.jpg", "imgs/missing.jpg", 1),  # the broken row
        ("imgs/astronaut_edit.jpg", "imgs/two_people.jpg", 0),
        ("imgs/two_people.jpg", "imgs/coffee.jpg", 0),
    ]  # no face in coffee
    with open(folder / "pairs.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["img1", "img2", "label"])
        writer.writerows(rows)
    return folder


def _results(out_dir):
    rows = [json.loads(line) for line in (out_dir / "results.jsonl").read_text().splitlines()]
    with open(out_dir / "results.csv", newline="") as handle:
        return rows, list(csv.DictReader(handle))


def _run(*args, checkpoint):
    return infer.main([*map(str, args), "--ckpt", str(checkpoint)])


def test_pairs_csv_streams_every_row_and_reports_broken_ones(
    pairs_dir, tmp_path, torch_home_with_vggface2, age_checkpoint, capsys
):
    out = tmp_path / "out"
    code = _run("--pairs", pairs_dir / "pairs.csv", out, checkpoint=age_checkpoint)
    assert code == infer.EXIT_PAIRS_FAILED
    assert "4 pairs: " in capsys.readouterr().out
    rows, table = _results(out)
    assert len(rows) == len(table) == 4
    by_pair = {(r["file_1"], r["file_2"]): r for r in rows}
    good = by_pair[("imgs/astronaut.jpg", "imgs/astronaut_edit.jpg")]
    assert good["label"] == 1
    assert good["error"] is None
    assert isinstance(good["verification"]["is_match"], bool)
    assert good["face_1"]["age"] is not None
    broken = by_pair[("imgs/astronaut.jpg", "imgs/missing.jpg")]
    assert broken["verification"] is None
    assert "missing.jpg" in broken["error"]
    assert "no such file" in broken["error"]
    assert broken["face_1"] is not None
    assert broken["face_2"] is None
    no_face = by_pair[("imgs/two_people.jpg", "imgs/coffee.jpg")]
    assert no_face["verification"] is None
    assert "no face found" in no_face["error"]
    csv_good = next(r for r in table if r["file_2"] == "imgs/astronaut_edit.jpg")
    assert csv_good["is_match"] in ("True", "False")
    assert float(csv_good["similarity"]) <= 1
    assert sum(1 for r in table if r["error"]) == 2
    assert json.loads((out / "config.json").read_text())["verification_threshold"] == 0.7


def test_each_photo_is_analysed_once(pairs_dir, tmp_path, torch_home_with_vggface2, age_checkpoint, monkeypatch):
    from face_match_age.inference import analyzer

    seen = []
    original = analyzer.load_image

    def counting(photo):
        seen.append(str(photo))
        return original(photo)

    monkeypatch.setattr(analyzer, "load_image", counting)
    _run("--pairs", pairs_dir / "pairs.csv", tmp_path / "out", checkpoint=age_checkpoint)
    assert len(seen) == len(set(seen)) == 5  # 5 distinct paths (one missing) in 4 pairs


@pytest.mark.slow  # two worker processes
def test_two_processes_share_the_photos(pairs_dir, tmp_path, torch_home_with_vggface2, age_checkpoint):
    code = _run(
        "--pairs",
        pairs_dir / "pairs.csv",
        tmp_path / "out",
        "--devices",
        "2",
        "--device",
        "cpu",
        checkpoint=age_checkpoint,
    )
    assert code == infer.EXIT_PAIRS_FAILED
    rows, _ = _results(tmp_path / "out")
    assert len(rows) == 4
    rank_of = {}
    for row in rows:
        for path, rank in zip((row["file_1"], row["file_2"]), row["worker_ranks"]):
            assert rank_of.setdefault(path, rank) == rank  # one photo, one worker
    assert set(rank_of.values()) == {0, 1}
    single = tmp_path / "single"
    _run("--pairs", pairs_dir / "pairs.csv", single, "--device", "cpu", checkpoint=age_checkpoint)
    one_process = {(r["file_1"], r["file_2"]): r for r in _results(single)[0]}
    # Sharding changes who computes, not what: the same rows as written for people (rounded); in the JSON, whose
    # numbers are exact, the processes' other thread counts may move a similarity by float noise (~1e-7).
    assert (tmp_path / "out" / "results.csv").read_text() == (single / "results.csv").read_text()
    for row in rows:
        other = one_process[(row["file_1"], row["file_2"])]
        assert (row["face_1"] or {}).get("box") == (other["face_1"] or {}).get("box")
        if row["verification"] is not None:
            assert row["verification"]["similarity"] == pytest.approx(other["verification"]["similarity"], abs=1e-5)
            assert row["verification"]["is_match"] == other["verification"]["is_match"]


def test_bad_pairs_files_exit_3(tmp_path, torch_home_with_vggface2, age_checkpoint, capsys):
    (tmp_path / "p.csv").write_text("a,b\nx.jpg,y.jpg\n")
    assert _run("--pairs", tmp_path / "p.csv", tmp_path / "o", checkpoint=age_checkpoint) == infer.EXIT_INPUT
    assert "lacks the column(s) img1, img2" in capsys.readouterr().err
    assert _run("--pairs", tmp_path / "none.csv", tmp_path / "o", checkpoint=age_checkpoint) == infer.EXIT_INPUT
    assert "does not exist" in capsys.readouterr().err


def test_a_wrong_number_of_positional_arguments_is_a_usage_error(capsys):
    # PHOTO OUT_DIR is the age of one photo (the seed's shortest form); one path alone is neither form
    with pytest.raises(SystemExit) as error:
        infer.main(["only_one.jpg"])
    assert error.value.code == 2
    assert "IMG1 IMG2 OUT_DIR" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        infer.main(["--pairs", "p.csv", "a", "b"])
    assert "unexpected argument b" in capsys.readouterr().err


def _interrupt_after(monkeypatch, photos: int):
    """Ctrl-C once `photos` photos have been analysed, as a user pressing it mid-batch would."""
    from face_match_age.inference.analyzer import FaceAnalyzer

    original = FaceAnalyzer.analyze_many

    def analyze_many(self, *args, **kwargs):
        for count, analysis in enumerate(original(self, *args, **kwargs)):
            if count == photos:
                raise KeyboardInterrupt
            yield analysis

    monkeypatch.setattr(FaceAnalyzer, "analyze_many", analyze_many)


def _files(out_dir):
    return [(out_dir / name).read_bytes() for name in ("results.jsonl", "results.csv")]


def test_rerun_after_ctrl_c_resumes_and_ends_with_an_uninterrupted_runs_files(
    pairs_dir, tmp_path, age_checkpoint, torch_home_with_vggface2, monkeypatch, capsys
):
    # One face per forward pass: the resumed run batches fewer faces, which must not move a last digit.
    command = ["--pairs", pairs_dir / "pairs.csv", "--inference-batch-size", "1"]
    assert _run(*command, tmp_path / "whole", checkpoint=age_checkpoint) == infer.EXIT_PAIRS_FAILED
    capsys.readouterr()

    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        _interrupt_after(patch, 3)  # astronaut, astronaut_edit, missing: rows of pairs 0 and 1 are written
        assert _run(*command, out, checkpoint=age_checkpoint) == infer.EXIT_INTERRUPTED
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines() == [
        f"error: cannot read image {pairs_dir / 'imgs' / 'missing.jpg'}: no such file",  # the failed photo, named
        f"interrupted: 2 rows kept in {out / 'results.jsonl'}; rerun the same command to resume",
    ]
    rows, table = _results(out)
    assert [r["pair_index"] for r in rows] == [0, 1]
    assert [r["file_2"] for r in table] == [r["file_2"] for r in rows]

    from face_match_age.inference import analyzer

    loaded = []
    monkeypatch.setattr(analyzer, "load_image", lambda photo: loaded.append(photo.name) or imaging.load_image(photo))
    assert _run(*command, out, checkpoint=age_checkpoint) == infer.EXIT_PAIRS_FAILED
    captured = capsys.readouterr()
    assert "resuming: 2 of 4 pairs already in" in captured.out
    assert "4 pairs: " in captured.out
    assert sorted(loaded) == ["astronaut_edit.jpg", "coffee.jpg", "two_people.jpg"]  # only what pairs 2, 3 need
    assert captured.err.splitlines() == [f"error: no face found in {pairs_dir / 'imgs' / 'coffee.jpg'}"]
    assert _files(out) == _files(tmp_path / "whole")


def test_a_row_cut_short_by_a_kill_is_dropped_and_done_again(
    pairs_dir, tmp_path, age_checkpoint, torch_home_with_vggface2, monkeypatch, capsys
):
    command = ["--pairs", pairs_dir / "pairs.csv", "--inference-batch-size", "1"]
    _run(*command, tmp_path / "whole", checkpoint=age_checkpoint)
    out = tmp_path / "killed"
    shutil.copytree(tmp_path / "whole", out)
    lines = (out / "results.jsonl").read_bytes().splitlines(keepends=True)
    (out / "results.jsonl").write_bytes(b"".join(lines[:2]) + lines[2][:40])  # killed while writing the third row
    from face_match_age.inference import analyzer

    loaded = []
    monkeypatch.setattr(analyzer, "load_image", lambda photo: loaded.append(photo.name) or imaging.load_image(photo))
    capsys.readouterr()
    assert _run(*command, out, checkpoint=age_checkpoint) == infer.EXIT_PAIRS_FAILED  # results.csv still holds 4
    assert "resuming: 2 of 4 pairs" in capsys.readouterr().out
    assert sorted(loaded) == ["astronaut_edit.jpg", "coffee.jpg", "two_people.jpg"]  # pairs 2 and 3 only
    assert _files(out) == _files(tmp_path / "whole")


def test_another_batch_is_refused_and_the_same_one_is_not_redone(
    pairs_dir, tmp_path, age_checkpoint, torch_home_with_vggface2, monkeypatch, capsys
):
    with open(pairs_dir / "one.csv", "w") as handle:
        handle.write("img1,img2\nimgs/astronaut.jpg,imgs/astronaut_edit.jpg\n")
    out = tmp_path / "out"
    assert _run("--pairs", pairs_dir / "one.csv", out, checkpoint=age_checkpoint) == infer.EXIT_OK
    before = _files(out)
    capsys.readouterr()
    for other in (
        ["--pairs", pairs_dir / "one.csv", "--threshold", "0.5"],
        ["--pairs", pairs_dir / "pairs.csv"],
        ["--pairs", pairs_dir / "one.csv", "--no-age"],
    ):
        assert _run(*other, out, checkpoint=age_checkpoint) == infer.EXIT_OUTPUT
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1
        assert "holds the results of another batch" in err
        assert "choose another OUT_DIR" in err
        assert "Traceback" not in err
        assert _files(out) == before
    assert "verification_threshold" in _run_err(
        capsys, out, "--pairs", pairs_dir / "one.csv", "--threshold", "0.5", checkpoint=age_checkpoint
    )

    def no_models(*args, **kwargs):
        raise AssertionError("a finished batch needs no model")

    from face_match_age.inference import analyzer

    monkeypatch.setattr(analyzer, "FaceAnalyzer", no_models)
    assert _run("--pairs", pairs_dir / "one.csv", out, checkpoint=age_checkpoint) == infer.EXIT_OK
    assert "resuming: 1 of 1 pairs" in capsys.readouterr().out
    assert _files(out) == before


def _run_err(capsys, out, *args, checkpoint):
    _run(*args, out, checkpoint=checkpoint)
    return capsys.readouterr().err


def test_photos_too_small_for_a_face_fail_their_rows_only(
    photo_dir, astronaut, tmp_path, age_checkpoint, torch_home_with_vggface2, capsys
):
    sizes = [(1, 1), (19, 19), (4000, 40), (8000, 50)]
    for width, height in sizes:
        astronaut.resize((width, height)).save(tmp_path / f"{width}x{height}.png")
    with open(tmp_path / "pairs.csv", "w") as handle:
        handle.write(
            "img1,img2\n"
            + "".join(f"{photo_dir / 'astronaut.jpg'},{w}x{h}.png\n" for w, h in sizes)
            + f"{photo_dir / 'astronaut.jpg'},{photo_dir / 'astronaut_edit.jpg'}\n"
        )
    assert _run("--pairs", tmp_path / "pairs.csv", tmp_path / "out", checkpoint=age_checkpoint) == 7
    rows, _ = _results(tmp_path / "out")
    assert [r["pair_index"] for r in rows] == [0, 1, 2, 3, 4]  # a finished batch is in the order of the pairs
    for row, (width, height) in zip(rows, sizes):
        assert row["verification"] is None
        assert f"no face found in {tmp_path / f'{width}x{height}.png'}" in row["error"]
        assert "too small" in row["error"]
        assert row["face_1"]["box"]
    assert rows[4]["error"] is None
    assert rows[4]["verification"]["similarity"] is not None
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 4
    assert all(line.startswith("error: no face found in") for line in err.splitlines())


def test_a_weights_error_in_a_worker_process_reaches_the_parent_as_a_weights_error(
    pairs_dir, tmp_path, age_checkpoint, monkeypatch
):
    import functools

    from config import Config
    from face_match_age.inference.analyzer import FaceAnalyzer
    from face_match_age.inference.batch import run_batch
    from face_match_age.inference.pair_specs import read_pairs_csv
    from face_match_age.match_rule import MatchRule
    from face_match_age.network.weights import PRETRAINED, PretrainedWeightsError

    torch_home = tmp_path / "torch_home"  # the worker processes inherit it from the environment
    (torch_home / "checkpoints").mkdir(parents=True)
    (torch_home / "checkpoints" / PRETRAINED["vggface2"].file_name).write_bytes(b"not a weights file")
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    pairs = read_pairs_csv(pairs_dir / "pairs.csv")
    make_analyzer = functools.partial(FaceAnalyzer, Config(), age_checkpoint=age_checkpoint)
    messages = {}
    for devices in (1, 2):
        with pytest.raises(PretrainedWeightsError) as raised:
            run_batch(
                pairs, tmp_path / f"out_{devices}", make_analyzer, MatchRule(0.7), config=Config(), devices=devices
            )
        messages[devices] = str(raised.value)
    assert messages[2] == messages[1]


def test_a_pair_gets_the_same_result_fields_in_pair_mode_and_in_a_batch(
    pairs_dir, tmp_path, torch_home_with_vggface2, age_checkpoint
):
    images = pairs_dir / "imgs"
    pair_args = (images / "astronaut.jpg", images / "astronaut_edit.jpg", tmp_path / "pair", "--json")
    assert _run(*pair_args, checkpoint=age_checkpoint) == infer.EXIT_OK
    pair = json.loads((tmp_path / "pair" / "astronaut_vs_astronaut_edit_data.json").read_text())
    (pairs_dir / "one.csv").write_text("img1,img2\nimgs/astronaut.jpg,imgs/astronaut_edit.jpg\n")
    assert _run("--pairs", pairs_dir / "one.csv", tmp_path / "batch", checkpoint=age_checkpoint) == infer.EXIT_OK
    row = _results(tmp_path / "batch")[0][0]
    assert [key for key in pair if key in row] == [key for key in row if key in pair]  # same fields, same order
    files = {"file_1", "file_2"}  # the photos as given: a path here, the CSV's cells there
    assert {key: row[key] for key in row if key in pair and key not in files} == {
        key: pair[key] for key in pair if key in row and key not in files
    }
    assert (row["file_1"], row["file_2"]) == ("imgs/astronaut.jpg", "imgs/astronaut_edit.jpg")
    assert (pair["file_1"], pair["file_2"]) == tuple(str(path) for path in pair_args[:2])
    assert set(pair) - set(row) == {"models", "timings_ms"}
    assert set(row) - set(pair) == {"pair_index", "label", "worker_ranks"}


@pytest.mark.parametrize(("devices", "needle"), [("0,1", "CUDA_VISIBLE_DEVICES=0,1"), ("two", "devices must be")])
def test_devices_a_batch_cannot_use_are_a_usage_error(pairs_dir, tmp_path, capsys, devices, needle):
    with pytest.raises(SystemExit) as error:
        infer.main(["--pairs", str(pairs_dir / "pairs.csv"), str(tmp_path / "out"), "--devices", devices])
    assert error.value.code == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_batchs_saved_config_repeats_its_settings(pairs_dir, tmp_path, torch_home_with_vggface2, age_checkpoint):
    out = tmp_path / "out"
    _run("--pairs", pairs_dir / "pairs.csv", out, "--threshold", "0.55", "--face", "center", checkpoint=age_checkpoint)
    _, config = cli.parse_command(["pairs", "p.csv", str(tmp_path / "again"), "--config", str(out / "config.json")])
    assert (config.verification_threshold, config.face_selection) == (0.55, "center")
    assert config.best_checkpoint == age_checkpoint


def test_a_batch_without_the_default_checkpoint_gives_null_ages_and_each_row_says_why(
    pairs_dir, tmp_path, torch_home_with_vggface2, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)  # a fresh clone: no checkpoints/best.ckpt
    (pairs_dir / "one.csv").write_text("img1,img2\nimgs/astronaut.jpg,imgs/astronaut_edit.jpg\n")
    assert infer.main(["--pairs", str(pairs_dir / "one.csv"), str(tmp_path / "out")]) == infer.EXIT_OK
    row = _results(tmp_path / "out")[0][0]
    assert row["face_1"]["age"] is None
    assert row["verification"]["similarity"] is not None
    assert row["age_model"]["loaded"] is False
    assert "train.py" in row["age_model"]["reason"]
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note: ")]
    assert len(notes) == 1
