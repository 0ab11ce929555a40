import csv
import json
import shutil

import pytest

import infer


@pytest.fixture
def pairs_dir(photo_dir, tmp_path):
    """A folder of photos with a pairs CSV using paths relative to the CSV's folder."""
    folder = tmp_path / "my pairs"
    (folder / "imgs").mkdir(parents=True)
    for name in ("astronaut.jpg", "astronaut_edit.jpg", "coffee.jpg", "two_people.jpg"):
        shutil.copy(photo_dir / name, folder / "imgs" / name)
    rows = [("imgs/astronaut.jpg", "imgs/astronaut_edit.jpg", 1),
            ("imgs/astronaut.jpg", "imgs/missing.jpg", 1),           # the broken row
            ("imgs/astronaut_edit.jpg", "imgs/two_people.jpg", 0),
            ("imgs/two_people.jpg", "imgs/coffee.jpg", 0)]           # no face in coffee
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


def test_pairs_csv_streams_every_row_and_reports_broken_ones(pairs_dir, tmp_path, torch_home_with_vggface2,
                                                             age_checkpoint, capsys):
    out = tmp_path / "out"
    code = _run("--pairs", pairs_dir / "pairs.csv", out, checkpoint=age_checkpoint)
    assert code == infer.EXIT_PAIRS_FAILED
    assert "4 pairs: " in capsys.readouterr().out
    rows, table = _results(out)
    assert len(rows) == len(table) == 4
    by_pair = {(r["img1"], r["img2"]): r for r in rows}
    good = by_pair[("imgs/astronaut.jpg", "imgs/astronaut_edit.jpg")]
    assert good["label"] == 1 and good["error"] is None and isinstance(good["verification"]["is_match"], bool)
    assert good["face_1"]["age_prediction"] is not None and good["image_2"] == "astronaut_edit.jpg"
    broken = by_pair[("imgs/astronaut.jpg", "imgs/missing.jpg")]
    assert broken["verification"] is None and "missing.jpg" in broken["error"] and "no such file" in broken["error"]
    assert broken["face_1"] is not None and broken["face_2"] is None
    no_face = by_pair[("imgs/two_people.jpg", "imgs/coffee.jpg")]
    assert no_face["verification"] is None and "no face found" in no_face["error"]
    csv_good = next(r for r in table if r["img2"] == "imgs/astronaut_edit.jpg")
    assert csv_good["is_match"] in ("True", "False") and float(csv_good["similarity_score"]) <= 1
    assert sum(1 for r in table if r["error"]) == 2
    assert json.loads((out / "config.json").read_text())["verification_threshold"] == 0.7


def test_folder_against_a_reference_and_all_pairs(pairs_dir, tmp_path, torch_home_with_vggface2, age_checkpoint):
    images = pairs_dir / "imgs"
    reference = images / "astronaut.jpg"
    assert _run("--folder", images, "--reference", reference, tmp_path / "ref", checkpoint=age_checkpoint) == 7
    rows, _ = _results(tmp_path / "ref")
    assert sorted(r["image_2"] for r in rows) == ["astronaut_edit.jpg", "coffee.jpg", "two_people.jpg"]
    assert all(r["image_1"] == "astronaut.jpg" for r in rows)

    assert _run("--folder", images, tmp_path / "all", checkpoint=age_checkpoint) == 7  # coffee has no face
    rows, _ = _results(tmp_path / "all")
    assert len(rows) == 6  # 4 photos: every unordered pair once


def test_each_photo_is_analysed_once(pairs_dir, tmp_path, torch_home_with_vggface2, age_checkpoint, monkeypatch):
    import analyzer

    seen = []
    original = analyzer.load_image

    def counting(photo):
        seen.append(str(photo))
        return original(photo)

    monkeypatch.setattr(analyzer, "load_image", counting)
    _run("--pairs", pairs_dir / "pairs.csv", tmp_path / "out", checkpoint=age_checkpoint)
    assert len(seen) == len(set(seen)) == 5  # 5 distinct paths (one missing) in 4 pairs


def test_two_processes_share_the_photos(pairs_dir, tmp_path, torch_home_with_vggface2, age_checkpoint):
    code = _run("--pairs", pairs_dir / "pairs.csv", tmp_path / "out", "--devices", "2", "--device", "cpu",
                checkpoint=age_checkpoint)
    assert code == infer.EXIT_PAIRS_FAILED
    rows, _ = _results(tmp_path / "out")
    assert len(rows) == 4
    rank_of = {}
    for row in rows:
        for path, rank in zip((row["img1"], row["img2"]), row["worker_ranks"]):
            assert rank_of.setdefault(path, rank) == rank  # one photo, one worker
    assert set(rank_of.values()) == {0, 1}
    single = tmp_path / "single"
    _run("--pairs", pairs_dir / "pairs.csv", single, "--device", "cpu", checkpoint=age_checkpoint)
    one_process = {(r["img1"], r["img2"]): r for r in _results(single)[0]}
    for row in rows:  # sharding changes who computes, not what
        other = one_process[(row["img1"], row["img2"])]
        assert row["face_1"] == other["face_1"] and row["verification"] == other["verification"]


def test_bad_pairs_files_exit_3(tmp_path, torch_home_with_vggface2, age_checkpoint, capsys):
    (tmp_path / "p.csv").write_text("a,b\nx.jpg,y.jpg\n")
    assert _run("--pairs", tmp_path / "p.csv", tmp_path / "o", checkpoint=age_checkpoint) == infer.EXIT_INPUT
    assert "lacks the column(s) img1, img2" in capsys.readouterr().err
    assert _run("--pairs", tmp_path / "none.csv", tmp_path / "o", checkpoint=age_checkpoint) == infer.EXIT_INPUT
    assert "does not exist" in capsys.readouterr().err


def test_command_line_shape_is_checked(capsys):
    with pytest.raises(SystemExit) as error:
        infer.main(["only_one.jpg", "out"])
    assert error.value.code == 2 and "IMG1 IMG2 OUT_DIR" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        infer.main(["--pairs", "p.csv", "a", "b"])
    assert "exactly one positional" in capsys.readouterr().err
