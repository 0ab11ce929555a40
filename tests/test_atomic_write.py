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
