"""infer.py's (and face-match-age's) subcommands on real photos: compare, age, pairs and folder, the seed's
shortest forms read as those commands, and the `serve` dispatch point. MTCNN is real; the networks have random
weights (a temporary TORCH_HOME and a saved age checkpoint), so ages and similarities mean nothing but every
path is the real one."""

import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
from PIL import Image

import infer
from face_match_age import cli
from face_match_age.exit_codes import ExitCode

ROOT = Path(__file__).resolve().parents[1]


# --- reading the command line: no models, no photos --------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["a.jpg", "b.jpg", "out"], ["compare", "a.jpg", "b.jpg", "out"]),
        (["a.jpg", "out"], ["age", "a.jpg", "out"]),
        (["a.jpg", "b.jpg", "out", "--threshold", "0.5"], ["compare", "a.jpg", "b.jpg", "out", "--threshold", "0.5"]),
        (["--threshold", "0.5", "a.jpg", "out"], ["age", "--threshold", "0.5", "a.jpg", "out"]),
        (["--pairs", "p.csv", "out", "--devices", "2"], ["pairs", "p.csv", "out", "--devices", "2"]),
        (["out", "--pairs=p.csv"], ["pairs", "p.csv", "out"]),
        (["--folder", "photos", "out", "--top-k", "5"], ["folder", "photos", "out", "--top-k", "5"]),
        (["--device", "cpu", "age", "a.jpg", "out"], ["age", "--device", "cpu", "a.jpg", "out"]),
        (["age", "a.jpg", "b.jpg", "c.jpg", "out"], ["age", "a.jpg", "b.jpg", "c.jpg", "out"]),
    ],
)
def test_the_seeds_forms_are_read_as_subcommands(argv, expected):
    assert cli.command_line(argv, cli.build_parser()) == expected


@pytest.mark.parametrize(
    ("argv", "command", "paths"),
    [
        (["a.jpg", "b.jpg", "out"], "compare", ["a.jpg", "b.jpg", "out"]),
        (["compare", "a.jpg", "b.jpg", "out"], "compare", ["a.jpg", "b.jpg", "out"]),
        (["a.jpg", "out"], "age", ["out"]),
        (["--pairs", "p.csv", "out"], "pairs", ["out"]),
        (["folder", "photos", "out"], "folder", ["out"]),
    ],
)
def test_every_form_parses_to_one_namespace(argv, command, paths):
    args, _ = cli.parse_command(argv)
    assert (args.command, args.paths) == (command, paths)
    # what the run functions read exists whatever the command
    assert all(hasattr(args, name) for name in cli.ARGUMENT_DEFAULTS)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        ([], "give a command (compare, age, pairs, folder, serve)"),
        (["a.jpg"], "give IMG1 IMG2 OUT_DIR (compare) or PHOTO OUT_DIR (age), not 1 path;"),
        (["a", "b", "c", "d"], "not 4 paths"),
        (["--pairs", "p.csv", "--folder", "d", "out"], "give one of --pairs and --folder"),
        (["age", "a.jpg", "out", "--json"], "--json (an option of compare, not of age)"),
        (["compare", "a", "b", "out", "--top-k", "3"], "--top-k (an option of folder, not of compare)"),
    ],
)
def test_command_lines_that_cannot_work_are_one_usage_line(argv, needle, capsys):
    with pytest.raises(SystemExit) as stop:
        infer.main(argv)
    assert stop.value.code == ExitCode.USAGE
    assert needle in capsys.readouterr().err


def test_serve_is_handed_its_arguments_by_one_table_entry(monkeypatch):
    seen = []
    command = types.ModuleType("fake_service_command")
    command.main = lambda argv: seen.append(argv) or 0
    monkeypatch.setitem(sys.modules, "fake_service_command", command)
    monkeypatch.setitem(cli.DELEGATED, "serve", "fake_service_command:main")
    assert infer.main(["serve", "--port", "8000", "--help"]) == 0
    assert seen == [["--port", "8000", "--help"]]


def test_serve_without_its_module_is_one_line(monkeypatch, capsys):
    monkeypatch.setitem(cli.DELEGATED, "serve", "face_match_age.no_such_service.command:main")
    assert infer.main(["serve"]) == ExitCode.USAGE
    assert capsys.readouterr().err == (
        "error: the serve command is not available in this installation "
        "(face_match_age.no_such_service.command is missing)\n"
    )


def test_every_subcommand_is_listed_in_the_help(capsys):
    with pytest.raises(SystemExit):
        infer.main(["--help"])
    text = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert f"\n  {name} " in text or f"\n    {name} " in text, name
    assert "IMG1 IMG2 OUT_DIR` is compare, `PHOTO OUT_DIR` is age" in text


# --- the commands on real photos ----------------------------------------------------------------------------


@pytest.fixture
def run(torch_home_with_vggface2, age_checkpoint, capsys):
    """infer.main with the test age checkpoint: (exit code, stdout, stderr)."""

    def _run(*argv):
        code = infer.main([*map(str, argv), "--ckpt", str(age_checkpoint)])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return _run


def test_age_of_one_photo_in_the_shortest_form(run, photo_dir, tmp_path):
    code, out, err = run(photo_dir / "astronaut.jpg", tmp_path / "out")
    assert (code, err) == (ExitCode.OK, "")
    result = json.loads((tmp_path / "out" / "astronaut_age_data.json").read_text())
    assert Path(result["file"]).name == "astronaut.jpg"
    assert result["faces_found"] == len(result["faces"]) == 1
    face = result["faces"][0]
    width, height = Image.open(photo_dir / "astronaut.jpg").size
    x1, y1, x2, y2 = face["box"]
    assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
    assert 0 <= face["age"] <= 100 and face["age_std"] >= 0
    assert face["age_interval"][0] <= face["age"] <= face["age_interval"][1]
    assert result["error"] is None
    assert out.startswith(f"astronaut.jpg: 1 face: {face['age']:.0f} ± {face['age_std']:.0f} years -> ")
    with Image.open(tmp_path / "out" / "astronaut_age_result.jpg") as picture:
        assert (picture.format, picture.size) == ("JPEG", (width, height))


def test_age_boxes_every_face_of_each_photo_and_a_faceless_photo_is_a_partial_run(run, photo_dir, tmp_path):
    photos = [photo_dir / name for name in ("two_people.jpg", "astronaut_edit.jpg", "coffee.jpg")]
    code, out, err = run("age", *photos, tmp_path / "out")
    assert code == ExitCode.PARTIAL  # several photos, one without a face: the others are written
    two = json.loads((tmp_path / "out" / "two_people_age_data.json").read_text())
    assert len(two["faces"]) == 2
    assert two["faces"][0]["box"] != two["faces"][1]["box"]
    assert "two_people.jpg: 2 faces: " in out
    coffee = json.loads((tmp_path / "out" / "coffee_age_data.json").read_text())
    assert coffee["faces"] == [] and "no face found in" in coffee["error"]
    assert "coffee.jpg: no face found" in out
    assert next(line for line in err.splitlines() if line.startswith("error:")).startswith("error: no face found in")
    written = sorted(path.name for path in (tmp_path / "out").iterdir())
    assert written == sorted(f"{p.stem}_age_{kind}" for p in photos for kind in ("data.json", "result.jpg"))


def test_age_draws_each_faces_label_on_the_photo(photo_dir):
    from face_match_age.inference.annotate import ages_image

    photo = Image.open(photo_dir / "two_people.jpg").convert("RGB")
    face = {"age": 42.0, "age_std": 5.0, "box": [150, 60, 330, 300]}
    drawn = ages_image(photo, {"faces": [face, {**face, "box": [640, 260, 740, 380]}]})
    assert drawn.size == photo.size
    changed = [box for box in ([150, 60, 330, 300], [640, 260, 740, 380]) if drawn.crop(box) != photo.crop(box)]
    assert len(changed) == 2  # both faces boxed
    big = ages_image(photo.resize((4000, 2048)), {"faces": []})
    assert max(big.size) == 1600  # a large photo's picture is shrunk


def test_age_of_one_faceless_photo_exits_4_and_an_unreadable_one_3(run, photo_dir, tmp_path):
    code, _, err = run("age", photo_dir / "coffee.jpg", tmp_path / "out")
    assert code == ExitCode.NO_FACE
    (tmp_path / "notes.jpg").write_text("just text")
    code, _, err = run("age", tmp_path / "notes.jpg", tmp_path / "out2")
    assert code == ExitCode.INPUT
    assert err.startswith("error: ") and "notes.jpg" in err and "not a readable image" in err


def test_age_without_an_age_model_is_refused_in_one_line(photo_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # a fresh clone: no checkpoints/best.ckpt
    assert infer.main([str(photo_dir / "astronaut.jpg"), "out"]) == ExitCode.MODEL
    err = capsys.readouterr().err
    assert err.startswith("error: no age model at checkpoints/best.ckpt (the default checkpoint); train one")
    assert err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_compare_subcommand_is_the_seeds_pair_mode(run, photo_dir, tmp_path):
    pair = [photo_dir / "astronaut.jpg", photo_dir / "astronaut_edit.jpg"]
    assert run("compare", *pair, tmp_path / "new", "--json")[0] == ExitCode.OK
    assert run(*pair, tmp_path / "old", "--json")[0] == ExitCode.OK
    new, old = (
        json.loads((tmp_path / d / "astronaut_vs_astronaut_edit_data.json").read_text()) for d in ("new", "old")
    )
    for result in (new, old):
        result.pop("timings_ms")
    assert new == old


def test_pairs_and_folder_subcommands_write_what_the_old_flags_wrote(run, photo_dir, tmp_path):
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"img1,img2,label\n{photo_dir / 'astronaut.jpg'},{photo_dir / 'astronaut_edit.jpg'},1\n")
    assert run("pairs", pairs, tmp_path / "batch")[0] == ExitCode.OK
    row = json.loads((tmp_path / "batch" / "results.jsonl").read_text())
    assert row["label"] == 1 and row["verification"] is not None
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("astronaut.jpg", "astronaut_edit.jpg"):
        shutil.copy(photo_dir / name, folder / name)
    code, out, _ = run("folder", folder, tmp_path / "collection")
    assert code == ExitCode.OK
    assert "2 photos: " in out
    assert (tmp_path / "collection" / "faces.csv").is_file()


@pytest.mark.slow  # the installed command in a process of its own
def test_the_installed_command_runs_age(torch_home_with_vggface2, age_checkpoint, photo_dir, tmp_path):
    command = Path(sys.executable).with_name("face-match-age")
    if not command.exists():
        pytest.skip("face-match-age is not installed in this environment (uv sync installs it)")
    result = subprocess.run(
        [str(command), "age", str(photo_dir / "astronaut.jpg"), str(tmp_path / "out"), "--ckpt", str(age_checkpoint)],
        cwd=tmp_path,
        env=dict(os.environ),  # TORCH_HOME: the fixture's weights
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("astronaut.jpg: 1 face: ")
    assert (tmp_path / "out" / "astronaut_age_data.json").is_file()
    assert str(ROOT) not in result.stderr
