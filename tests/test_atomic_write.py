"""One atomic write for every file the toolkit writes (results, configs, crops, checkpoints)."""

import pytest

from face_match_age.files.output_files import OutputError, write_atomically


def _write_half_then_fail(error: BaseException):
    def write(tmp):
        tmp.write_text("half of the new")
        raise error

    return write


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), RuntimeError("a bug"), KeyboardInterrupt()])
def test_a_write_that_fails_midway_leaves_the_old_file_whole(tmp_path, error):
    path = tmp_path / "summary.json"
    path.write_text("the old contents")
    with pytest.raises((OutputError, type(error))):
        write_atomically(path, _write_half_then_fail(error))
    assert path.read_text() == "the old contents"


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), RuntimeError("a bug"), KeyboardInterrupt()])
def test_a_failed_write_leaves_no_temporary_file(tmp_path, error):
    with pytest.raises((OutputError, type(error))):
        write_atomically(tmp_path / "results.csv", _write_half_then_fail(error))
    assert list(tmp_path.iterdir()) == []


def test_a_disk_error_is_an_output_error_naming_the_file(tmp_path):
    path = tmp_path / "results.csv"
    with pytest.raises(OutputError, match="No space left on device") as raised:
        write_atomically(path, _write_half_then_fail(OSError(28, "No space left on device")))
    assert str(path) in str(raised.value)


@pytest.mark.parametrize("durable", [False, True])
def test_a_write_replaces_the_file_whole(tmp_path, durable):
    path = tmp_path / "config.json"
    path.write_text("old")
    write_atomically(path, lambda tmp: tmp.write_text("new"), durable=durable)
    assert path.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_leftovers_of_killed_writers_are_removed_and_results_kept(tmp_path):
    from face_match_age.files.output_files import remove_temporary_files

    (tmp_path / "p1.jpg").write_bytes(b"a finished crop")
    (tmp_path / ".p2.jpg.tmp").write_bytes(b"half a crop")
    remove_temporary_files(tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["p1.jpg"]


def test_an_interrupted_crop_pool_leaves_no_temporary_file_behind(tmp_path):
    from PIL import Image

    from config import Config
    from face_match_age.preparation.crops import CropTask, run_crops

    photos, crops = tmp_path / "photos", tmp_path / "crops"
    photos.mkdir()
    crops.mkdir()
    tasks = []
    for number in range(8):
        Image.new("RGB", (64, 64), (number * 30, 80, 80)).save(photos / f"p{number}.jpg")
        tasks.append(CropTask(str(photos / f"p{number}.jpg"), str(crops / f"p{number}.jpg")))
    (crops / ".p7.jpg.tmp").write_bytes(b"what a worker killed mid-write leaves")  # the race, made certain
    outcomes = run_crops(tasks, Config(img_size=32), detect=False, workers=2)
    next(outcomes)
    outcomes.close()  # what Ctrl-C in the consumer does (data_prep closes the generator)
    assert list(crops.glob(".*.tmp")) == []
