"""infer.py end to end on real photos (scikit-image), with random-weight models from a temporary
TORCH_HOME and a saved age checkpoint. Random weights make every similarity meaningless but every
code path real."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

import infer
from config import Config
from face_match_age.detection import imaging
from face_match_age.inference import annotate
from face_match_age.inference.analyzer import FaceAnalyzer


@pytest.fixture
def run(torch_home_with_vggface2, age_checkpoint, capsys):
    """Run infer.main with the test age checkpoint; returns (exit code, stdout, stderr)."""

    def _run(*args, ckpt=True):
        code = infer.main([*map(str, args), *(["--ckpt", str(age_checkpoint)] if ckpt else [])])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return _run


def _only_error_line(err: str, *needles: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_pair_writes_annotated_image_and_seed_json(run, photo_dir, tmp_path):
    out = tmp_path / "new" / "out"  # created when missing
    code, stdout, _ = run(photo_dir / "astronaut.jpg", photo_dir / "astronaut_edit.jpg", out, "--json")
    assert code == 0
    image_path, json_path = (
        out / "astronaut_vs_astronaut_edit_result.jpg",
        out / "astronaut_vs_astronaut_edit_data.json",
    )
    assert str(image_path) in stdout
    with Image.open(image_path) as picture:
        assert picture.format == "JPEG"
        assert picture.width > picture.height
    result = json.loads(json_path.read_text())
    assert result["file_1"] == str(photo_dir / "astronaut.jpg")  # as given
    assert result["file_2"] == str(photo_dir / "astronaut_edit.jpg")
    sizes = {
        "face_1": Image.open(photo_dir / "astronaut.jpg").size,
        "face_2": Image.open(photo_dir / "astronaut_edit.jpg").size,
    }
    for key, (width, height) in sizes.items():
        face = result[key]
        assert isinstance(face["age"], float)
        assert 0 <= face["age"] <= 100
        x1, y1, x2, y2 = face["box"]
        assert all(isinstance(v, int) for v in face["box"])
        assert 0 <= x1 < x2 <= width
        assert 0 <= y1 < y2 <= height
        assert face["age_std"] >= 0
        assert face["age_interval"][0] <= face["age"] <= face["age_interval"][1]
    verification = result["verification"]
    assert isinstance(verification["is_match"], bool)
    assert -1 <= verification["similarity"] <= 1
    assert verification["threshold_used"] == 0.7
    assert verification["is_match"] == (verification["similarity"] > 0.7)
    assert result["error"] is None
    assert result["models"]["verification_weights"] == "vggface2"


def test_exif_rotated_photo_gives_the_upright_box(torch_home_with_vggface2, age_checkpoint, astronaut, tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned 90 degrees; viewers rotate it back upright
    astronaut.transpose(Image.ROTATE_90).save(tmp_path / "turned.jpg", exif=exif, quality=95)
    astronaut.save(tmp_path / "upright.jpg", quality=95)
    analyzer = FaceAnalyzer(age_checkpoint=age_checkpoint)
    upright, turned = (analyzer.detect(tmp_path / name)[0]["box"] for name in ("upright.jpg", "turned.jpg"))
    assert np.abs(np.subtract(upright, turned)).max() <= 3


def test_large_photos_are_detected_small_and_boxed_in_original_pixels(torch_home_with_vggface2, astronaut):
    big = astronaut.resize((2048, 2048))
    full = FaceAnalyzer(Config(detection_max_side=4096), with_age=False).detect(big)[0]["box"]
    shrunk = FaceAnalyzer(Config(detection_max_side=512), with_age=False).detect(big)[0]["box"]
    assert np.abs(np.subtract(full, shrunk)).max() <= 0.03 * 2048
    assert shrunk[2] > 512  # in the 2048-pixel photo's coordinates, not the shrunk copy's


def test_face_missing_writes_json_with_nulls_and_never_matches(run, photo_dir, tmp_path):
    code, _, err = run(photo_dir / "astronaut.jpg", photo_dir / "coffee.jpg", tmp_path, "--json")
    assert code == infer.EXIT_NO_FACE
    _only_error_line(err, "no face found in", "coffee.jpg")
    result = json.loads((tmp_path / "astronaut_vs_coffee_data.json").read_text())
    assert result["face_2"] is None
    assert result["verification"] is None
    assert "coffee.jpg" in result["error"]
    assert result["face_1"]["box"]
    assert (tmp_path / "astronaut_vs_coffee_result.jpg").is_file()


@pytest.mark.parametrize(
    "make_input, needle",
    [
        (lambda d: d / "missing.jpg", "no such file"),
        (lambda d: d, "folder"),
        (lambda d: _write(d / "notes.jpg", b"just text"), "not a readable image"),
        (lambda d: _write(d / "half.jpg", (d / "src.jpg").read_bytes()[:3000]), "not a readable image"),
    ],
)
def test_bad_inputs_end_with_one_line_and_exit_3(run, photo_dir, tmp_path, make_input, needle):
    shutil.copy(photo_dir / "astronaut.jpg", tmp_path / "src.jpg")
    bad = make_input(tmp_path)
    code, _, err = run(photo_dir / "astronaut.jpg", bad, tmp_path / "out")
    assert code == infer.EXIT_INPUT
    _only_error_line(err, str(bad), needle)


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def test_decompression_bomb_is_refused(run, photo_dir, tmp_path):
    Image.new("1", (20000, 20000)).save(tmp_path / "bomb.png")  # 400 megapixels in a few kilobytes
    assert (tmp_path / "bomb.png").stat().st_size < 1_000_000
    code, _, err = run(photo_dir / "astronaut.jpg", tmp_path / "bomb.png", tmp_path / "out")
    assert code == infer.EXIT_INPUT
    _only_error_line(err, "bomb.png")


def test_unwritable_out_dir_exits_5(run, photo_dir, tmp_path):
    (tmp_path / "a_file").write_text("x")
    code, _, err = run(photo_dir / "astronaut.jpg", photo_dir / "astronaut.jpg", tmp_path / "a_file" / "out")
    assert code == infer.EXIT_OUTPUT
    _only_error_line(err, str(tmp_path / "a_file" / "out"), "choose another OUT_DIR")


def test_missing_age_checkpoint_exits_6_and_no_age_needs_none(run, photo_dir, tmp_path):
    code, _, err = run(
        photo_dir / "astronaut.jpg",
        photo_dir / "astronaut_edit.jpg",
        tmp_path,
        "--ckpt",
        tmp_path / "none.ckpt",
        ckpt=False,
    )
    assert code == infer.EXIT_MODEL
    _only_error_line(err, str(tmp_path / "none.ckpt"), "train.py")
    code, _, _ = run(
        photo_dir / "astronaut.jpg",
        photo_dir / "astronaut_edit.jpg",
        tmp_path,
        "--json",
        "--no-age",
        "--ckpt",
        tmp_path / "none.ckpt",
        ckpt=False,
    )
    assert code == 0
    result = json.loads((tmp_path / "astronaut_vs_astronaut_edit_data.json").read_text())
    assert result["face_1"]["age"] is None
    assert result["age_gap"] is None
    assert result["verification"]["similarity"] is not None


def _run_without_ckpt(photo_dir, out, *options, capsys) -> tuple[int, str]:
    code = infer.main([str(photo_dir / "astronaut.jpg"), str(photo_dir / "astronaut_edit.jpg"), str(out), *options])
    return code, capsys.readouterr().err


def test_without_the_default_checkpoint_verification_runs_and_ages_are_null(
    photo_dir, tmp_path, torch_home_with_vggface2, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)  # a fresh clone: no checkpoints/best.ckpt
    code, _ = _run_without_ckpt(photo_dir, tmp_path / "out", "--json", capsys=capsys)
    assert code == infer.EXIT_OK
    result = json.loads((tmp_path / "out" / "astronaut_vs_astronaut_edit_data.json").read_text())
    assert result["face_1"]["age"] is None
    assert result["age_gap"] is None
    assert result["verification"]["similarity"] is not None


def test_without_the_default_checkpoint_the_json_says_why(
    photo_dir, tmp_path, torch_home_with_vggface2, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    _run_without_ckpt(photo_dir, tmp_path / "out", "--json", capsys=capsys)
    result = json.loads((tmp_path / "out" / "astronaut_vs_astronaut_edit_data.json").read_text())
    assert result["age_model"]["loaded"] is False
    assert "checkpoints/best.ckpt" in result["age_model"]["reason"]
    assert "train.py" in result["age_model"]["reason"]


def test_without_the_default_checkpoint_stderr_says_once_how_to_get_one(
    photo_dir, tmp_path, torch_home_with_vggface2, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    _, err = _run_without_ckpt(photo_dir, tmp_path / "out", capsys=capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("note: no age model at checkpoints/best.ckpt")
    assert "--ckpt" in lines[0]


def test_the_default_checkpoint_named_with_ckpt_and_missing_exits_6(
    photo_dir, tmp_path, torch_home_with_vggface2, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    code, err = _run_without_ckpt(photo_dir, tmp_path / "out", "--ckpt", "checkpoints/best.ckpt", capsys=capsys)
    assert code == infer.EXIT_MODEL
    _only_error_line(err, "checkpoints/best.ckpt")


def test_no_age_without_a_checkpoint_gives_no_note_and_says_no_age(
    photo_dir, tmp_path, torch_home_with_vggface2, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    code, err = _run_without_ckpt(photo_dir, tmp_path / "out", "--json", "--no-age", capsys=capsys)
    assert code == infer.EXIT_OK
    assert err == ""
    result = json.loads((tmp_path / "out" / "astronaut_vs_astronaut_edit_data.json").read_text())
    assert result["age_model"] == {"loaded": False, "reason": "--no-age: verification only"}


def test_a_loaded_age_model_is_reported_as_loaded(run, photo_dir, tmp_path):
    run(photo_dir / "astronaut.jpg", photo_dir / "astronaut_edit.jpg", tmp_path, "--json")
    result = json.loads((tmp_path / "astronaut_vs_astronaut_edit_data.json").read_text())
    assert result["age_model"] == {"loaded": True, "reason": None}


def test_missing_verification_weights_exit_6_with_the_whole_message_on_lines(
    age_checkpoint, photo_dir, tmp_path, empty_torch_home, capsys
):
    from face_match_age.network.weights import PRETRAINED

    code = infer.main(
        [
            str(photo_dir / "astronaut.jpg"),
            str(photo_dir / "astronaut.jpg"),
            str(tmp_path),
            "--ckpt",
            str(age_checkpoint),
        ]
    )
    assert code == infer.EXIT_MODEL
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith("download of")]
    assert lines[0].startswith("error: The pretrained 'vggface2' InceptionResnetV1 weights are not on this machine")
    assert "  file:   20180402-114759-vggface2.pt" in lines
    assert f"  folder: {empty_torch_home / 'checkpoints'}  (set TORCH_HOME to use another)" in lines
    assert f"  url:    {PRETRAINED['vggface2'].url}" in lines
    assert lines[-1].endswith("or, with infer.py, name a weights file with --verify-weights PATH.")
    assert "..." not in err


def test_verify_weights_names_a_file_directly(age_checkpoint, photo_dir, tmp_path, empty_torch_home, capsys):
    from fake_networks import write_facenet_weights

    write_facenet_weights(tmp_path / "mine.pt", 8631)
    code = infer.main(
        [
            str(photo_dir / "astronaut.jpg"),
            str(photo_dir / "astronaut.jpg"),
            str(tmp_path / "o"),
            "--ckpt",
            str(age_checkpoint),
            "--verify-weights",
            str(tmp_path / "mine.pt"),
            "--json",
        ]
    )
    assert code == 0
    result = json.loads((tmp_path / "o" / "astronaut_vs_astronaut_data.json").read_text())
    assert result["models"]["verification_weights"] == str(tmp_path / "mine.pt")


def test_face_rules_and_all_faces_on_a_photo_of_two(run, photo_dir, tmp_path):
    two = photo_dir / "two_people.jpg"
    chosen = {}
    for rule in ("largest", "center"):
        code, _, _ = run(two, photo_dir / "astronaut.jpg", tmp_path / rule, "--json", "--face", rule)
        assert code == 0
        face = json.loads((tmp_path / rule / "two_people_vs_astronaut_data.json").read_text())["face_1"]
        assert face["faces_found"] == 2
        chosen[rule] = face["box"]
    assert chosen["largest"][0] < 450  # big face on the left, small one right of centre
    assert chosen["center"][0] > 450

    code, _, _ = run(two, two, tmp_path / "all", "--json", "--all-faces")
    assert code == 0
    result = json.loads((tmp_path / "all" / "two_people_vs_two_people_data.json").read_text())
    assert len(result["faces_1"]) == 2
    assert len(result["faces_2"]) == 2
    matrix = np.array(result["similarity_matrix"])
    assert matrix.shape == (2, 2)
    best = result["best_pair"]
    assert best["similarity"] == pytest.approx(matrix.max())
    assert result["verification"]["similarity"] == pytest.approx(matrix[best["face_1"], best["face_2"]])


def test_same_stems_from_other_folders_do_not_overwrite(run, photo_dir, tmp_path):
    for folder, source in (("first", "astronaut.jpg"), ("second", "astronaut_edit.jpg")):
        (tmp_path / folder).mkdir()
        shutil.copy(photo_dir / source, tmp_path / folder / "me.jpg")
    out = tmp_path / "out"
    assert run(tmp_path / "first" / "me.jpg", photo_dir / "astronaut.jpg", out, "--json")[0] == 0
    code, _, err = run(tmp_path / "second" / "me.jpg", photo_dir / "astronaut.jpg", out, "--json")
    assert code == 0
    assert "another pair's result" in err
    first = json.loads((out / "me_vs_astronaut_data.json").read_text())
    second = json.loads((out / "me_vs_astronaut_2_data.json").read_text())
    assert "first" in first["file_1"]
    assert "second" in second["file_1"]
    assert run(tmp_path / "first" / "me.jpg", photo_dir / "astronaut.jpg", out, "--json")[0] == 0
    assert sorted(p.name for p in out.glob("*_result.jpg")) == [
        "me_vs_astronaut_2_result.jpg",
        "me_vs_astronaut_result.jpg",
    ]


def test_paths_with_spaces_and_non_ascii_letters_name_the_outputs(run, photo_dir, tmp_path):
    folder = tmp_path / "photos of Zoë"
    folder.mkdir()
    shutil.copy(photo_dir / "astronaut.jpg", folder / "année 1999.jpg")
    code, _, _ = run(
        folder / "année 1999.jpg", photo_dir / "astronaut_edit.jpg", tmp_path / "sortie é", "--json", "--tta"
    )
    assert code == 0
    result = json.loads((tmp_path / "sortie é" / "année 1999_vs_astronaut_edit_data.json").read_text(encoding="utf-8"))
    assert result["file_1"] == str(folder / "année 1999.jpg")
    assert result["models"]["tta"] is True


@pytest.mark.parametrize("size", [(1, 1), (19, 19), (4000, 40), (8000, 50)])
def test_photo_too_small_for_a_face_is_no_face_not_a_crash(run, photo_dir, astronaut, tmp_path, size):
    tiny = tmp_path / f"tiny_{size[0]}x{size[1]}.png"
    astronaut.resize(size).save(tiny)
    code, _, err = run(photo_dir / "astronaut.jpg", tiny, tmp_path / "out", "--json")
    assert code == infer.EXIT_NO_FACE
    _only_error_line(err, "no face found in", tiny.name, "too small")
    result = json.loads((tmp_path / "out" / f"astronaut_vs_{tiny.stem}_data.json").read_text())
    assert result["face_2"] is None
    assert result["verification"] is None
    assert result["face_1"]["box"]
    with Image.open(tmp_path / "out" / f"astronaut_vs_{tiny.stem}_result.jpg") as picture:
        assert picture.width <= 2 * annotate.MAX_PANEL_WIDTH + annotate.GAP  # a banner stays a storable JPEG


@pytest.mark.parametrize("value", ["0", "11", "801", "1000"])
def test_min_face_size_outside_what_mtcnn_can_search_is_a_usage_error(photo_dir, tmp_path, capsys, value):
    with pytest.raises(SystemExit) as error:
        infer.main(
            [
                str(photo_dir / "astronaut.jpg"),
                str(photo_dir / "coffee.jpg"),
                str(tmp_path),
                "--mtcnn-min-face-size",
                value,
            ]
        )
    assert error.value.code == infer.EXIT_USAGE
    err = capsys.readouterr().err
    assert "mtcnn_min_face_size must lie in 12..800 pixels" in err
    assert f"got {value}" in err
    assert "Traceback" not in err


def test_ctrl_c_in_pair_mode_ends_with_one_line_and_exit_130(run, photo_dir, tmp_path, monkeypatch):
    def interrupted(photo):
        raise KeyboardInterrupt

    monkeypatch.setattr(imaging, "load_image", interrupted)  # pair mode imports it when it runs
    code, _, err = run(photo_dir / "astronaut.jpg", photo_dir / "coffee.jpg", tmp_path)
    assert code == infer.EXIT_INTERRUPTED == 130
    assert err.strip() == "interrupted: rerun the same command to compare the pair"


def test_a_face_without_an_age_model_is_labelled_so_in_the_picture(astronaut):
    face = {"box": [150, 60, 330, 300], "age": None, "age_std": None}
    result = {"face_1": face, "face_2": face, "verification": None}
    unlabelled = annotate.comparison_image(astronaut, astronaut, result)
    labelled = annotate.comparison_image(astronaut, astronaut, {**result, "age_model": {"loaded": False}})
    assert labelled.size == unlabelled.size
    assert labelled.tobytes() != unlabelled.tobytes()
