"""What a batch (--pairs) or folder (--folder) run trusts about its OUT_DIR and its inputs, each found false
once: two runs writing one OUT_DIR, verification weights swapped under the same name, a photo replaced under
its name or fixed after failing, OUT_DIR inside the photo folder, and a flipped byte in a model file."""

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import processes
import pytest
from synthetic import make_dataset

import evaluate
import infer
from face_match_age.exit_codes import ExitCode
from face_match_age.files.output_files import OutputError, out_dir_lock
from face_match_age.inference import analyzer
from face_match_age.network.weights import save_random_weights

VGGFACE2 = "20180402-114759-vggface2.pt"
ROOT = Path(__file__).resolve().parents[1]
HOLD_THE_LOCK = """
import sys
from pathlib import Path
from face_match_age.files.output_files import out_dir_lock
with out_dir_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.read()  # until killed
"""


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def _photos(photo_dir: Path, folder: Path, **names: str) -> Path:
    """`folder` holding a copy of photo_dir's `source` as each `name` (name=source)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, source in names.items():
        shutil.copy(photo_dir / f"{source}.jpg", folder / f"{name}.jpg")
    return folder


def _pairs_csv(photo_dir: Path, tmp_path: Path) -> Path:
    path = tmp_path / "pairs.csv"
    path.write_text(f"img1,img2\n{photo_dir / 'astronaut.jpg'},{photo_dir / 'astronaut_edit.jpg'}\n")
    return path


def _faces(out: Path) -> dict[str, dict]:
    with open(out / "faces.csv", newline="", encoding="utf-8") as handle:
        return {row["file"]: row for row in csv.DictReader(handle)}


@pytest.mark.parametrize("mode", ["--pairs", "--folder"])
def test_a_run_into_an_out_dir_another_run_is_writing_is_refused(
    mode, photo_dir, tmp_path, torch_home_with_vggface2, capsys
):
    source = _pairs_csv(photo_dir, tmp_path) if mode == "--pairs" else photo_dir
    out = tmp_path / "out"
    out.mkdir()
    with out_dir_lock(out):  # the first run, still writing
        assert infer.main([mode, str(source), str(out), "--no-age"]) == infer.EXIT_OUTPUT
    line = _one_error_line(capsys)
    assert f"another run is writing to {out}" in line, line
    assert "choose another OUT_DIR" in line, line
    assert sorted(path.name for path in out.iterdir()) == [".lock"]  # nothing of the second run's


@pytest.mark.slow  # a process holds the lock
def test_the_lock_of_a_run_killed_outright_is_released_with_its_process(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_LOCK, str(tmp_path)], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert processes.read_line(holder, "the other process to take the lock") == b"locked\n"
        with pytest.raises(OutputError, match="another run is writing to"), out_dir_lock(tmp_path):
            pass
    finally:
        holder.kill()  # kill -9: no clean-up of its own runs
        processes.wait(holder, "the lock's holder to end after SIGKILL")
    with out_dir_lock(tmp_path):  # no stale lock
        pass


def test_verification_weights_swapped_under_their_name_refuse_a_resumed_batch_and_a_grown_folder(
    _vggface2_file, photo_dir, tmp_path, monkeypatch, capsys
):
    weights = tmp_path / "torch_home" / "checkpoints" / VGGFACE2
    weights.parent.mkdir(parents=True)
    shutil.copy(_vggface2_file[0] / "checkpoints" / VGGFACE2, weights)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    pairs = _pairs_csv(photo_dir, tmp_path)
    folder = _photos(photo_dir, tmp_path / "photos", a="astronaut", b="astronaut_edit")
    batch, collection = tmp_path / "batch", tmp_path / "collection"
    assert infer.main(["--pairs", str(pairs), str(batch), "--no-age"]) == infer.EXIT_OK
    assert infer.main(["--folder", str(folder), str(collection), "--no-age", "--embed-only"]) == infer.EXIT_OK
    save_random_weights(weights)  # other weights, same name, same layout and size
    _photos(photo_dir, folder, c="two_people")  # the collection grew
    capsys.readouterr()
    for command, out in ((["--pairs", str(pairs)], batch), (["--folder", str(folder), "--embed-only"], collection)):
        assert infer.main([*command, str(out), "--no-age"]) == infer.EXIT_OUTPUT
        line = _one_error_line(capsys)
        assert str(out) in line and "verify_weights" in line, line
        assert f"{VGGFACE2} is not the file" in line, line
        assert "another OUT_DIR" in line and "delete" in line, line


def test_a_photo_replaced_under_its_name_and_a_fixed_failed_one_are_embedded_again(
    photo_dir, tmp_path, torch_home_with_vggface2, age_checkpoint, monkeypatch, capsys
):
    folder = _photos(photo_dir, tmp_path / "photos", original="astronaut", replaced="astronaut_edit")
    (folder / "broken.jpg").write_bytes((photo_dir / "astronaut_edit.jpg").read_bytes()[:300])  # a cut copy
    out, command = tmp_path / "out", ["--folder", str(folder), str(tmp_path / "out"), "--ckpt", str(age_checkpoint)]
    assert infer.main(command) == infer.EXIT_PAIRS_FAILED
    before = _faces(out)
    assert before["broken.jpg"]["error"] and not before["replaced.jpg"]["error"]
    shutil.copy(photo_dir / "astronaut.jpg", folder / "replaced.jpg")
    shutil.copy(photo_dir / "astronaut_edit.jpg", folder / "broken.jpg")  # fixed
    original, opened = analyzer.load_image, []
    monkeypatch.setattr(analyzer, "load_image", lambda photo: opened.append(Path(photo).name) or original(photo))
    capsys.readouterr()
    assert infer.main(command) == infer.EXIT_OK
    assert "resuming: 1 of 3 photos already embedded" in capsys.readouterr().out
    assert sorted(opened) == ["broken.jpg", "replaced.jpg"]
    after = _faces(out)
    for now, was in (("replaced.jpg", after["original.jpg"]), ("broken.jpg", before["replaced.jpg"])):
        assert after[now]["box"] == was["box"] and not after[now]["error"]
        assert float(after[now]["age"]) == pytest.approx(float(was["age"]), abs=0.02)
    assert after["replaced.jpg"]["box"] != before["replaced.jpg"]["box"]


def test_a_folder_that_is_its_own_out_dir_never_reads_its_results_back_as_photos(
    photo_dir, tmp_path, torch_home_with_vggface2, monkeypatch, capsys
):
    folder = _photos(photo_dir, tmp_path / "photos", a="astronaut", b="astronaut_edit")
    command = ["--folder", str(folder), str(folder), "--no-age", "--threshold", "-1"]  # -1: a match, a cluster
    assert infer.main(command) == infer.EXIT_OK
    assert (folder / "contact_sheet.jpg").is_file() and list((folder / "clusters").glob("*.jpg"))

    def no_models(*args, **kwargs):
        raise AssertionError("every photo is embedded already")

    monkeypatch.setattr(analyzer, "FaceAnalyzer", no_models)
    capsys.readouterr()
    assert infer.main(command) == infer.EXIT_OK
    assert "resuming: 2 of 2 photos" in capsys.readouterr().out
    assert sorted(_faces(folder)) == ["a.jpg", "b.jpg"]


def _flip_a_byte(source: Path, copy: Path) -> Path:
    data = bytearray(source.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the weights: torch.load reads it without complaint
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_bytes(bytes(data))
    return copy


def test_a_flipped_byte_in_a_model_file_is_refused_in_one_line_by_infer_and_evaluate(
    _vggface2_file, age_checkpoint, photo_dir, tmp_path, monkeypatch, capsys
):
    checkpoint = _flip_a_byte(age_checkpoint, tmp_path / "flipped" / "best.ckpt")
    weights = _flip_a_byte(_vggface2_file[0] / "checkpoints" / VGGFACE2, tmp_path / "home" / "checkpoints" / VGGFACE2)
    pair = [str(photo_dir / "astronaut.jpg"), str(photo_dir / "astronaut_edit.jpg"), str(tmp_path / "out")]
    monkeypatch.setenv("TORCH_HOME", str(_vggface2_file[0]))
    assert infer.main([*pair, "--ckpt", str(checkpoint)]) == infer.EXIT_MODEL
    assert f"checkpoint {checkpoint} is damaged: it is corrupt" in _one_error_line(capsys)

    data = make_dataset(tmp_path / "data", train=1, val=2, size=80)
    age = ["age", "--images", str(data.val_dir), "--csv", str(data.val_csv), "--out", str(tmp_path / "eval")]
    assert evaluate.main([*age, "--ckpt", str(checkpoint)]) == ExitCode.MODEL
    assert f"checkpoint {checkpoint} is damaged: it is corrupt" in _one_error_line(capsys)

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    assert infer.main([*pair, "--no-age"]) == infer.EXIT_MODEL
    assert f"weights file {weights} is damaged: it is corrupt" in _one_error_line(capsys)
