"""infer.py --folder: each photo embedded once into a resumable store, matches found without listing all pairs,
the same matches as comparing every pair with --pairs."""

import csv
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import processes
import pytest

import infer
from face_match_age.files.embedding_store import EmbeddingStore
from face_match_age.inference import analyzer, folder_embedding


@pytest.fixture(scope="module")
def shared(photo_dir, tmp_path_factory, _vggface2_file, age_checkpoint):
    """Made once for the module: a folder of eight face photos (two in a sub-folder) and one without a face,
    every pair's similarity by the --pairs path, and an uninterrupted --folder run of it (OUT_DIR `whole`)."""
    from dataset_archives import face_photo_folder

    root = tmp_path_factory.mktemp("folder_runs")
    folder = face_photo_folder(root / "photos", photo_dir / "coffee.jpg", count=6)
    (folder / "trip").mkdir()
    (folder / "trip" / "astronaut.jpg").write_bytes((photo_dir / "astronaut.jpg").read_bytes())
    (folder / "trip" / "astronaut_edit.jpg").write_bytes((photo_dir / "astronaut_edit.jpg").read_bytes())
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(_vggface2_file[0]))
        every_pair = _all_pair_similarities(folder, root, age_checkpoint)
        _run("--folder", folder, root / "whole", checkpoint=age_checkpoint)
    return SimpleNamespace(folder=folder, every_pair=every_pair, whole=root / "whole")


@pytest.fixture
def faces_folder(shared, tmp_path):
    """A copy of the shared folder that a test may change."""
    return Path(shutil.copytree(shared.folder, tmp_path / "photos"))


def _run(*args, checkpoint):
    return infer.main([*map(str, args), "--ckpt", str(checkpoint)])


def _table(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _all_pair_similarities(folder: Path, tmp_path: Path, checkpoint) -> dict[frozenset, float]:
    """Every pair's similarity as the --pairs path computes it, by the photos' names relative to `folder`."""
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.jpg"))
    pairs_csv = tmp_path / "all_pairs.csv"
    with open(pairs_csv, "w", newline="") as handle:
        pairs = [(folder / a, folder / b) for a, b in itertools.combinations(names, 2)]
        csv.writer(handle).writerows([("img1", "img2"), *pairs])
    _run("--pairs", pairs_csv, tmp_path / "pairs_out", checkpoint=checkpoint)
    similarities = {}
    for row in _table(tmp_path / "pairs_out" / "results.csv"):
        if row["similarity"]:
            pair = frozenset(Path(row[key]).relative_to(folder).as_posix() for key in ("file_1", "file_2"))
            similarities[pair] = float(row["similarity"])
    return similarities


def test_folder_matches_equal_those_of_comparing_every_pair(shared, tmp_path, torch_home_with_vggface2, age_checkpoint):
    every_pair = shared.every_pair
    assert len(every_pair) == 28  # 8 photos with a face
    values = sorted(every_pair.values())
    threshold = round((values[len(values) // 2 - 1] + values[len(values) // 2]) / 2, 6)  # half the pairs above
    expected = {pair: value for pair, value in every_pair.items() if value > threshold}
    assert 0 < len(expected) < len(every_pair)

    out = tmp_path / "folder_out"
    _run("--folder", shared.folder, out, "--threshold", threshold, checkpoint=age_checkpoint)
    matches = _table(out / "matches.csv")
    found = {frozenset((row["file_1"], row["file_2"])): float(row["similarity"]) for row in matches}
    assert found.keys() == expected.keys()
    for pair, value in expected.items():
        assert found[pair] == pytest.approx(value, abs=2e-4)
    assert len(matches) == len(found)  # each pair once
    similarities = [float(row["similarity"]) for row in matches]
    assert similarities == sorted(similarities, reverse=True)


def test_faces_csv_has_one_row_per_photo_with_its_box_age_and_error(
    shared, tmp_path, torch_home_with_vggface2, age_checkpoint, capsys
):
    out = tmp_path / "out"
    shutil.copytree(shared.whole / "embeddings", out / "embeddings")  # embedded already: this run only searches
    assert _run("--folder", shared.folder, out, checkpoint=age_checkpoint) == infer.EXIT_PAIRS_FAILED  # coffee
    assert (out / "faces.csv").read_text() == (shared.whole / "faces.csv").read_text()
    rows = {row["file"]: row for row in _table(out / "faces.csv")}
    assert sorted(rows) == sorted(p.relative_to(shared.folder).as_posix() for p in shared.folder.rglob("*.jpg"))
    assert "trip/astronaut.jpg" in rows
    assert "no face found" in rows["coffee.jpg"]["error"]
    assert rows["coffee.jpg"]["box"] == ""
    face = rows["face0.jpg"]
    assert len(face["box"].split()) == 4
    assert 0 <= float(face["age"]) <= 100
    assert float(face["age_std"]) > 0
    assert face["error"] == ""
    assert "9 photos (1 without a face or unreadable)" in capsys.readouterr().out


def test_top_k_lists_each_photos_k_most_similar(shared, tmp_path, torch_home_with_vggface2, age_checkpoint):
    every_pair = shared.every_pair
    out = tmp_path / "out"
    shutil.copytree(shared.whole / "embeddings", out / "embeddings")
    _run("--folder", shared.folder, out, "--top-k", 2, checkpoint=age_checkpoint)
    rows = _table(out / "matches.csv")
    by_photo = {}
    for row in rows:
        by_photo.setdefault(row["file_1"], []).append(row)
    assert len(by_photo) == 8
    for photo, listed in by_photo.items():
        others = sorted((value for pair, value in every_pair.items() if photo in pair), reverse=True)
        assert [float(row["similarity"]) for row in listed] == pytest.approx(others[:2], abs=2e-4)
        for row in listed:
            assert row["is_match"] == str(float(row["similarity"]) > 0.7)


def test_reference_mode_gives_every_photos_similarity_and_only_matches(
    shared, tmp_path, torch_home_with_vggface2, age_checkpoint
):
    every_pair, faces_folder = shared.every_pair, shared.folder
    reference = faces_folder / "face0.jpg"
    to_reference = {next(iter(pair - {"face0.jpg"})): v for pair, v in every_pair.items() if "face0.jpg" in pair}
    threshold = sorted(to_reference.values())[3]
    out = tmp_path / "out"
    _run("--folder", faces_folder, "--reference", reference, out, "--threshold", threshold, checkpoint=age_checkpoint)
    faces = {row["file"]: row for row in _table(out / "faces.csv")}
    assert "face0.jpg" not in faces
    for photo, value in to_reference.items():
        assert float(faces[photo]["similarity_to_reference"]) == pytest.approx(value, abs=2e-4)
    assert faces["coffee.jpg"]["similarity_to_reference"] == ""
    matches = _table(out / "matches.csv")
    assert {row["file_2"] for row in matches} == {p for p, v in to_reference.items() if v > threshold}
    assert {row["file_1"] for row in matches} == {str(reference)}


def test_ctrl_c_keeps_the_photos_done_and_the_rerun_embeds_only_the_rest(
    shared, tmp_path, torch_home_with_vggface2, age_checkpoint, monkeypatch, capsys
):
    faces_folder, whole = shared.folder, shared.whole
    monkeypatch.setattr(folder_embedding, "PHOTOS_PER_CHUNK", 2)
    monkeypatch.setattr(folder_embedding, "PHOTOS_PER_BATCH", 1)
    original, opened = analyzer.load_image, []

    def interrupted_at_the_sixth_photo(photo):
        if len(opened) == 5:
            raise KeyboardInterrupt
        opened.append(str(photo))
        return original(photo)

    monkeypatch.setattr(analyzer, "load_image", interrupted_at_the_sixth_photo)
    out = tmp_path / "out"
    capsys.readouterr()
    assert _run("--folder", faces_folder, out, "--inference-batch-size", 1, checkpoint=age_checkpoint) == 130
    err = capsys.readouterr().err
    assert "interrupted: " in err
    assert "rerun the same command to resume" in err
    assert "Traceback" not in err
    done = EmbeddingStore(out / "embeddings").files()
    assert len(done) == 5  # two whole chunks, and the finished photo of the cut one
    kept_parts = {path.name: path.read_bytes() for path in (out / "embeddings").glob("part_*")}

    monkeypatch.setattr(analyzer, "load_image", lambda photo: opened.append(str(photo)) or original(photo))
    opened.clear()
    _run("--folder", faces_folder, out, "--inference-batch-size", 1, checkpoint=age_checkpoint)
    for name, content in kept_parts.items():  # what was saved is never written again
        assert (out / "embeddings" / name).read_bytes() == content
    assert sorted(Path(p).relative_to(faces_folder).as_posix() for p in opened) == sorted(
        {p.relative_to(faces_folder).as_posix() for p in faces_folder.rglob("*.jpg")} - done
    )
    _assert_same_results(out, whole)


KILLED_RUN = """
import sys, time
from face_match_age.inference import analyzer, folder_embedding
folder_embedding.PHOTOS_PER_CHUNK = folder_embedding.PHOTOS_PER_BATCH = 1
original = analyzer.load_image
analyzer.load_image = lambda photo: time.sleep(0.3) or original(photo)  # pace the run so a kill lands midway
import infer
sys.exit(infer.main(sys.argv[1:]))
"""


@pytest.mark.slow  # infer.py in a process of its own
def test_a_run_killed_outright_resumes_and_ends_as_an_uninterrupted_one(
    shared, tmp_path, torch_home_with_vggface2, age_checkpoint
):
    faces_folder, out, whole = shared.folder, tmp_path / "out", shared.whole
    command = ["--folder", str(faces_folder), str(out), "--ckpt", str(age_checkpoint), "--inference-batch-size", "1"]
    process = subprocess.Popen([sys.executable, "-c", KILLED_RUN, *command], env=os.environ.copy())
    manifest = out / "embeddings" / "manifest.json"

    def two_chunks_saved() -> bool:
        return manifest.is_file() and len(json.loads(manifest.read_text())["parts"]) >= 2

    processes.wait_until(two_chunks_saved, process, "the run to save two chunks, to kill it there")
    process.send_signal(signal.SIGKILL)
    assert processes.wait(process, "the run to end after SIGKILL") == -signal.SIGKILL
    kept = len(EmbeddingStore(out / "embeddings").files())
    assert 2 <= kept < 9

    assert _run(*command[:2], str(out), "--inference-batch-size", "1", checkpoint=age_checkpoint) == 7
    store = EmbeddingStore(out / "embeddings")
    assert len(store.table()) == 9  # each photo once
    _assert_same_results(out, whole)


def test_a_photo_added_later_is_the_only_one_embedded_and_a_removed_one_leaves_the_results(
    shared, faces_folder, photo_dir, tmp_path, torch_home_with_vggface2, age_checkpoint, monkeypatch, capsys
):
    out = tmp_path / "out"
    shutil.copytree(shared.whole / "embeddings", out / "embeddings")
    (faces_folder / "face5.jpg").unlink()
    (faces_folder / "later.jpg").write_bytes((photo_dir / "two_people.jpg").read_bytes())
    original, opened = analyzer.load_image, []
    monkeypatch.setattr(analyzer, "load_image", lambda photo: opened.append(Path(photo).name) or original(photo))
    capsys.readouterr()
    _run("--folder", faces_folder, out, checkpoint=age_checkpoint)
    assert opened == ["later.jpg"]
    assert "resuming: 8 of 9 photos already embedded" in capsys.readouterr().out
    files = [row["file"] for row in _table(out / "faces.csv")]
    assert "later.jpg" in files
    assert "face5.jpg" not in files
    assert all("face5.jpg" not in (row["file_1"], row["file_2"]) for row in _table(out / "matches.csv"))


def test_another_embedding_setting_is_refused_but_another_threshold_is_not(
    shared, tmp_path, torch_home_with_vggface2, age_checkpoint, capsys
):
    faces_folder, out = shared.folder, tmp_path / "out"
    shutil.copytree(shared.whole / "embeddings", out / "embeddings")
    before = (out / "embeddings" / "manifest.json").read_bytes()
    capsys.readouterr()
    assert _run("--folder", faces_folder, out, "--tta", checkpoint=age_checkpoint) == infer.EXIT_OUTPUT
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert "other settings (tta)" in err
    assert (out / "embeddings" / "manifest.json").read_bytes() == before
    assert _run("--folder", faces_folder, out, "--threshold", 0.99, checkpoint=age_checkpoint) == 7
    assert (out / "embeddings" / "manifest.json").read_bytes() == before


def test_shards_embedded_apart_and_merged_give_the_matches_of_one_run(
    shared, tmp_path, torch_home_with_vggface2, age_checkpoint, capsys
):
    faces_folder, whole = shared.folder, shared.whole
    names = sorted(p.relative_to(faces_folder).as_posix() for p in faces_folder.rglob("*.jpg"))
    lists = [tmp_path / "shard_0.txt", tmp_path / "shard_1.txt"]
    lists[0].write_text("\n".join(names[0::2]) + "\n")
    lists[1].write_text("\n".join(str(faces_folder / name) for name in names[1::2]) + "\n\n")  # absolute paths
    shards = [tmp_path / "shard_0", tmp_path / "shard_1"]
    for file_list, shard in zip(lists, shards):
        _run("--folder", faces_folder, "--files", file_list, "--embed-only", shard, checkpoint=age_checkpoint)
        assert not (shard / "matches.csv").exists()
    merged = tmp_path / "merged"
    capsys.readouterr()
    merge = [option for shard in shards for option in ("--merge-from", shard)]
    _run("--folder", faces_folder, *merge, merged, checkpoint=age_checkpoint)
    assert "resuming: 9 of 9 photos already embedded" in capsys.readouterr().out
    _assert_same_results(merged, whole)

    capsys.readouterr()
    assert _run("--folder", faces_folder, "--merge-from", shards[0], merged, checkpoint=age_checkpoint) == 5
    assert "already holds embeddings" in capsys.readouterr().err
    twice = ["--merge-from", whole, "--merge-from", shards[0]]
    assert _run("--folder", faces_folder, *twice, tmp_path / "m2", checkpoint=age_checkpoint) == infer.EXIT_INPUT
    assert "is in two shards" in capsys.readouterr().err


def _one_error_line(capsys, *args, checkpoint) -> tuple[int, str]:
    capsys.readouterr()
    code = _run(*args, checkpoint=checkpoint)
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    return code, err


def test_bad_folders_each_give_one_clear_line(photo_dir, tmp_path, torch_home_with_vggface2, age_checkpoint, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a photo")
    code, err = _one_error_line(capsys, "--folder", empty, tmp_path / "o1", checkpoint=age_checkpoint)
    assert code == infer.EXIT_INPUT
    assert "holds no photos" in err

    one = tmp_path / "one"
    one.mkdir()
    (one / "astronaut.jpg").write_bytes((photo_dir / "astronaut.jpg").read_bytes())
    code, err = _one_error_line(capsys, "--folder", one, tmp_path / "o2", checkpoint=age_checkpoint)
    assert code == infer.EXIT_INPUT
    assert "holds one photo (astronaut.jpg): nothing to compare it with" in err

    no_faces = tmp_path / "no_faces"
    no_faces.mkdir()
    for name in ("a.jpg", "b.jpg"):
        (no_faces / name).write_bytes((photo_dir / "coffee.jpg").read_bytes())
    capsys.readouterr()
    assert _run("--folder", no_faces, tmp_path / "o3", checkpoint=age_checkpoint) == infer.EXIT_NO_FACE
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == f"error: no face was found in any of the 2 photos; see {tmp_path / 'o3' / 'faces.csv'}"
    assert "Traceback" not in "".join(err)

    code, err = _one_error_line(
        capsys, "--folder", one, "--files", tmp_path / "missing.txt", tmp_path / "o4", checkpoint=age_checkpoint
    )
    assert code == infer.EXIT_INPUT
    assert "cannot read the file list" in err


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--top-k", "0"], "--top-k must be at least 1"),
        (["--all-faces"], "--all-faces (an option of compare and pairs, not of folder)"),
        (["--embed-only", "--top-k", "3"], "--embed-only stops before matching"),
    ],
)
def test_folder_options_that_cannot_work_are_usage_errors(tmp_path, options, message, capsys):
    with pytest.raises(SystemExit) as stop:
        infer.main(["--folder", str(tmp_path), str(tmp_path / "out"), *options])
    assert stop.value.code == 2
    assert message in capsys.readouterr().err


def test_folder_options_need_folder(tmp_path, capsys):
    with pytest.raises(SystemExit):
        infer.main(["--pairs", str(tmp_path / "p.csv"), str(tmp_path / "out"), "--top-k", "3"])
    assert "--top-k (an option of folder, not of pairs)" in capsys.readouterr().err


def test_clusters_are_the_groups_connected_by_matches_with_a_timeline_each(shared):
    from PIL import Image

    matches = _table(shared.whole / "matches.csv")
    faces = [row for row in _table(shared.whole / "faces.csv") if row["box"]]
    group = {row["file"]: {row["file"]} for row in faces}  # joined by hand, pair by pair
    for row in matches:
        joined = group[row["file_1"]] | group[row["file_2"]]
        for member in joined:
            group[member] = joined
    expected = {frozenset(members) for members in group.values()}
    clusters = {}
    for row in faces:
        clusters.setdefault(row["cluster"], set()).add(row["file"])
    assert {frozenset(members) for members in clusters.values()} == expected
    table = _table(shared.whole / "clusters.csv")
    assert [int(row["size"]) for row in table] == sorted((len(m) for m in expected), reverse=True)
    for row in table:
        assert int(row["size"]) == len(clusters[row["cluster"]])
        if int(row["size"]) >= 2:
            with Image.open(shared.whole / row["timeline"]) as timeline:
                assert timeline.format == "JPEG"
                assert max(timeline.size) <= 8 * 300
        else:
            assert row["timeline"] == ""
    with Image.open(shared.whole / "contact_sheet.jpg") as sheet:
        assert sheet.format == "JPEG"


def test_two_processes_embed_the_folder_as_one_does(shared, tmp_path, torch_home_with_vggface2, age_checkpoint):
    out = tmp_path / "out"
    _run("--folder", shared.folder, out, "--devices", 2, "--device", "cpu", checkpoint=age_checkpoint)
    _assert_same_results(out, shared.whole)


def _assert_same_results(out: Path, whole: Path) -> None:
    """The results of `out` are those of the uninterrupted run `whole`: the same photos, boxes, errors and
    pairs, ages and similarities equal up to float noise (photos embedded in other batches)."""
    faces, expected = _table(out / "faces.csv"), _table(whole / "faces.csv")
    assert [(r["file"], r["box"], r["error"]) for r in faces] == [(r["file"], r["box"], r["error"]) for r in expected]
    assert _numbers_by_key(out / "faces.csv", "file", "age") == pytest.approx(
        _numbers_by_key(whole / "faces.csv", "file", "age"), abs=0.02
    )
    assert _numbers_by_key(out / "matches.csv", ("file_1", "file_2"), "similarity") == pytest.approx(
        _numbers_by_key(whole / "matches.csv", ("file_1", "file_2"), "similarity"), abs=2e-4
    )


def _numbers_by_key(table: Path, key, column: str) -> dict:
    rows = _table(table)
    keys = [tuple(row[k] for k in key) if isinstance(key, tuple) else row[key] for row in rows]
    return {k: float(row[column]) if row[column] else None for k, row in zip(keys, rows)}


def test_embedding_hands_freed_memory_back_after_every_batch_of_photos(
    shared, tmp_path, torch_home_with_vggface2, age_checkpoint, monkeypatch
):
    calls = []
    monkeypatch.setattr(folder_embedding, "PHOTOS_PER_BATCH", 2)
    monkeypatch.setattr(folder_embedding, "release_freed_memory", lambda: calls.append(1))
    _run("--folder", shared.folder, tmp_path / "out", "--embed-only", checkpoint=age_checkpoint)
    assert len(calls) == 9 // 2  # 9 photos
