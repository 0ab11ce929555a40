import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

import config
from config import Config, ConfigArgumentParser, add_config_arguments, load_config, parse_config, save_config

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_hold_the_seed_settings():
    c = Config()
    assert c.train_dir == Path("data/IMDB/train_images") and c.val_dir == Path("data/IMDB/val_images")
    assert c.train_csv == Path("data/IMDB/train.csv") and c.val_csv == Path("data/IMDB/val.csv")
    assert (c.img_size, c.batch_size, c.learning_rate, c.max_epochs, c.patience) == (160, 256, 1e-4, 50, 6)
    assert (c.val_ratio, c.label_sigma, c.verification_threshold) == (0.2, 2.0, 0.7)
    assert c.best_checkpoint == Path("checkpoints/best.ckpt") and c.checkpoint_dir == Path("checkpoints")
    assert c.log_dir == Path("logs/face_age_det")
    assert c.face_selection in config.FACE_SELECTION_CHOICES and c.mtcnn_margin >= 0
    assert config.NUM_AGE_BINS == 101


def test_every_field_says_why():
    for f in dataclasses.fields(Config):
        assert len(f.metadata.get("why", "")) > 10, f.name


def test_import_has_no_side_effects(tmp_path):
    """Every root script and every module of the package: importing one makes, fetches and prints nothing."""
    package = sorted(
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for path in (ROOT / "face_match_age").rglob("*.py")
    )
    scripts = sorted(path.stem for path in ROOT.glob("*.py"))
    assert "face_match_age.detection.faces" in package and "train" in scripts  # the lists are not empty
    result = subprocess.run(
        [sys.executable, "-c", "import " + ", ".join(scripts + package)],
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "TORCH_HOME": str(tmp_path / "th")},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []  # no folders made, no weights fetched


def _parser(*names):
    parser = ConfigArgumentParser(prog="script")
    add_config_arguments(parser, names)
    return parser


def test_command_line_overrides_fields_by_name_and_alias():
    parser = _parser("batch_size", "learning_rate", "train_dir", "pretrained", "checkpoint_dir")
    _, c = parse_config(
        parser,
        ["--batch-size", "64", "--lr", "0.001", "--train-dir", "x/y", "--pretrained", "none", "--ckpt-dir", "out"],
    )
    assert c.batch_size == 64 and c.learning_rate == 0.001 and c.train_dir == Path("x/y")
    assert c.pretrained == "none" and c.checkpoint_dir == Path("out")
    assert c.max_epochs == Config().max_epochs  # untouched fields keep their defaults


def test_unknown_option_is_rejected_with_a_suggestion(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_config(_parser("batch_size"), ["--batch-sise", "3"])
    assert exit_info.value.code == 2
    assert "unknown option --batch-sise" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_config(_parser("batch_size"), ["--batch-sise", "3"])
    assert "did you mean --batch-size" in capsys.readouterr().err


def test_invalid_values_are_usage_errors(capsys):
    with pytest.raises(SystemExit):
        parse_config(_parser("val_ratio"), ["--val-ratio", "1.5"])
    assert "val_ratio must lie strictly between 0 and 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_config(_parser("pretrained"), ["--pretrained", "imagenet"])
    assert "invalid choice" in capsys.readouterr().err


def test_replace_rejects_unknown_field_names():
    with pytest.raises(ValueError, match=r"unknown config field 'batchsize' \(did you mean 'batch_size'\?\)"):
        Config().replace(batchsize=3)
    with pytest.raises(ValueError, match="unknown config field"):
        add_config_arguments(ConfigArgumentParser(), ["no_such_field"])


def test_resolved_config_is_saved_and_read_back(tmp_path):
    c = Config().replace(batch_size=32, train_dir=Path("a/b"))
    path = save_config(c, tmp_path / "run", extra={"script": "train.py"})
    saved = json.loads(path.read_text())
    assert saved["batch_size"] == 32 and saved["train_dir"] == "a/b" and saved["script"] == "train.py"
    assert load_config(path) == c
    assert not list((tmp_path / "run").glob("*.tmp"))


def test_stray_positional_arguments_are_named(capsys):
    with pytest.raises(SystemExit):
        parse_config(_parser("batch_size"), ["--batch-size", "3", "stray"])
    assert "unexpected argument stray" in capsys.readouterr().err


def test_an_optional_path_field_is_an_option_that_takes_a_path():
    parser = ConfigArgumentParser()
    add_config_arguments(parser, ["resume_checkpoint"])
    _, config = parse_config(parser, ["--ckpt", "runs/last.ckpt"])
    assert config.resume_checkpoint == Path("runs/last.ckpt")
