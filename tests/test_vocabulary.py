"""One vocabulary in every script: the same option name and values for the same thing (--precision, --device,
--ckpt for the model to use and --resume for the run to continue), and the same exit code for the same failure,
listed once in docs/exit-codes.md. These tests fail when one script's command line drifts from the others."""

import argparse
import re
from pathlib import Path

import pytest
from synthetic import make_dataset, train_args

import data_prep
import evaluate
import infer
import model
import train
from face_match_age.exit_codes import ExitCode, exit_code_table
from face_match_age.settings import PRECISION_CHOICES

ROOT = Path(__file__).resolve().parents[1]


def _parsers() -> dict:
    """Every command line of every script: script (and subcommand) -> its parser."""
    parsers = {
        "train.py": train.build_parser(),
        "model.py": model.build_parser(),
        "data_prep.py": data_prep.build_parser(),
    }
    parsers |= {f"evaluate.py {name}": parser for name, parser in evaluate.build_parser().commands.items()}
    parsers |= {f"infer.py {name}": parser for name, parser in infer.build_parser().commands.items()}
    return parsers


def _action(parser, option: str) -> argparse.Action | None:
    return next((action for action in parser.options if option in action.option_strings), None)


def _shown(action: argparse.Action) -> bool:
    return action.help is not argparse.SUPPRESS


PRECISION_SCRIPTS = {"train.py", "model.py", *(f"infer.py {c}" for c in ("compare", "age", "pairs", "folder"))}
PRECISION_SCRIPTS |= {"evaluate.py verify", "evaluate.py retrieve"}
DEVICE_SCRIPTS = PRECISION_SCRIPTS | {"data_prep.py", "evaluate.py age"}


def test_precision_is_one_option_with_one_value_set_everywhere():
    parsers = _parsers()
    having = {name for name, parser in parsers.items() if _action(parser, "--precision")}
    assert having == PRECISION_SCRIPTS
    for name in having:
        action = _action(parsers[name], "--precision")
        assert tuple(action.choices) == PRECISION_CHOICES == ("auto", "32", "bf16", "16"), name
        # Lightning's spellings are the same values, in every script
        assert [action.type(text) for text in ("32-true", "bf16-mixed", "16-mixed", "bf16")] == [
            "32",
            "bf16",
            "16",
            "bf16",
        ]


def test_device_is_one_option_with_one_value_set_everywhere():
    parsers = _parsers()
    having = {name for name, parser in parsers.items() if _action(parser, "--device")}
    assert having == DEVICE_SCRIPTS
    helps = {_action(parsers[name], "--device").help for name in having}
    assert len(helps) == 1, helps
    for name in having:
        action = _action(parsers[name], "--device")
        assert [action.type(text) for text in ("auto", "cpu", "cuda", "cuda:1", "mps")] == [
            "auto",
            "cpu",
            "cuda",
            "cuda:1",
            "mps",
        ]
        with pytest.raises(argparse.ArgumentTypeError, match="device must be auto, cpu, cuda, cuda:N"):
            action.type("gpu")
        old = _action(parsers[name], "--accelerator")
        assert old is None or not _shown(old), name  # an old name, kept hidden where it was once shown


def test_no_script_shows_the_old_spellings():
    for name, parser in _parsers().items():
        shown = {option for action in parser.options if _shown(action) for option in action.option_strings}
        assert not shown & {"--accelerator", "--inference-device"}, name
        choices = [action.choices for action in parser.options if _shown(action) and action.choices]
        assert not any("32-true" in values or "bf16-mixed" in values for values in choices), name


def test_ckpt_is_the_model_to_use_and_resume_the_run_to_continue():
    parsers = _parsers()
    uses = {name: _action(parser, "--ckpt") for name, parser in parsers.items()}
    models = {name for name, action in uses.items() if action is not None and _shown(action)}
    assert models == {
        "evaluate.py age",
        "evaluate.py verify",
        *(f"infer.py {c}" for c in ("compare", "age", "pairs", "folder")),
    }
    assert {uses[name].dest for name in models} <= {"best_checkpoint", "ckpt"}
    resumes = {name for name, parser in parsers.items() if _action(parser, "--resume")}
    assert resumes == {"train.py"}
    assert _action(parsers["train.py"], "--resume").dest == "resume_checkpoint"
    assert not _shown(uses["train.py"])  # train.py's --ckpt is refused with a hint (below)


def test_train_refuses_ckpt_with_the_name_it_takes(capsys):
    with pytest.raises(SystemExit) as stop:
        train.main(["--ckpt", "checkpoints/last.ckpt"])
    assert stop.value.code == ExitCode.USAGE
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--ckpt: train.py resumes a run with --resume PATH" in err
    assert "--ckpt names the model to use in infer.py and evaluate.py" in err


# --- exit codes ---------------------------------------------------------------------------------------------


def test_the_documented_exit_code_table_is_the_enum():
    page = (ROOT / "docs" / "exit-codes.md").read_text()
    assert exit_code_table() in page
    rows = re.findall(r"^\| (\d+) \| `(\w+)` \| (.*) \|$", page, flags=re.MULTILINE)
    assert [(int(code), name) for code, name, _ in rows] == [(code.value, code.name) for code in ExitCode]


def test_every_help_lists_only_codes_of_the_table(capsys):
    codes = {code.value for code in ExitCode}
    for name, parser in {"infer.py": infer.build_parser(), **_parsers()}.items():
        if name == "infer.py serve":  # its own module's parser answers serve --help
            continue
        listed = re.findall(r"^  (\d+) ", parser.format_help().split("\nexit codes:\n")[-1], flags=re.MULTILINE)
        assert listed and set(map(int, listed)) <= codes, name


@pytest.fixture
def pairs_csv(photo_dir, tmp_path) -> Path:
    path = tmp_path / "pairs.csv"
    rows = [("astronaut.jpg", "astronaut_edit.jpg", 1), ("astronaut.jpg", "coffee.jpg", 0)]
    path.write_text("img1,img2,label\n" + "".join(f"{photo_dir / a},{photo_dir / b},{label}\n" for a, b, label in rows))
    return path


@pytest.mark.parametrize(
    "script", ["infer.py compare", "infer.py age", "infer.py pairs", "evaluate.py verify", "train.py", "model.py"]
)
def test_missing_pretrained_weights_exit_with_the_tables_code_in_every_script(
    script, empty_torch_home, age_checkpoint, photo_dir, pairs_csv, tmp_path, capsys
):
    out = str(tmp_path / "out")
    photo, other = str(photo_dir / "astronaut.jpg"), str(photo_dir / "astronaut_edit.jpg")
    ckpt = ["--ckpt", str(age_checkpoint)]
    runs = {
        "infer.py compare": lambda: infer.main(["compare", photo, other, out, *ckpt]),
        "infer.py age": lambda: infer.main(["age", photo, out, *ckpt]),
        "infer.py pairs": lambda: infer.main(["pairs", str(pairs_csv), out, *ckpt, "--devices", "1"]),
        "evaluate.py verify": lambda: evaluate.main(["verify", "--pairs", str(pairs_csv), "--out", out]),
        "train.py": lambda: train.main(
            train_args(make_dataset(tmp_path / "data", train=4, val=2, size=80), pretrained="vggface2")
        ),
        "model.py": lambda: model.main(["--pretrained", "vggface2", "--device", "cpu"]),
    }
    assert runs[script]() == ExitCode.MODEL
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "error: The pretrained 'vggface2' InceptionResnetV1 weights are not on this machine" in err


def test_a_config_json_of_an_older_run_loads_in_todays_words(tmp_path):
    from face_match_age.command_line import load_config
    from face_match_age.settings import Config

    saved = tmp_path / "config.json"
    saved.write_text('{"accelerator": "cpu", "precision": "bf16-mixed", "inference_precision": "32", "script": "x"}')
    assert load_config(saved) == Config(device="cpu", precision="bf16", inference_precision="32")
    assert Config(precision="16-mixed").precision == "16"
