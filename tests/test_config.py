import ast
import dataclasses
import importlib
import json
import sys
from pathlib import Path

import processes
import pytest

import config
from config import Config, ConfigArgumentParser, add_config_arguments, load_config, parse_config, save_config

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_hold_the_seed_settings():
    c = Config()
    assert c.train_dir == Path("data/IMDB/train_images")
    assert c.val_dir == Path("data/IMDB/val_images")
    assert c.train_csv == Path("data/IMDB/train.csv")
    assert c.val_csv == Path("data/IMDB/val.csv")
    assert (c.img_size, c.batch_size, c.learning_rate, c.max_epochs, c.patience) == (160, 256, 1e-4, 50, 6)
    assert (c.val_ratio, c.label_sigma, c.verification_threshold) == (0.2, 2.0, 0.7)
    assert c.best_checkpoint == Path("checkpoints/best.ckpt")
    assert c.checkpoint_dir == Path("checkpoints")
    assert c.log_dir == Path("logs/face_age_det")
    assert c.face_selection in config.FACE_SELECTION_CHOICES
    assert c.mtcnn_margin >= 0
    assert config.NUM_AGE_BINS == 101


def test_each_default_is_defined_once_in_the_package_and_the_root_config_re_exports_it():
    """face_match_age/settings.py defines the configuration and face_match_age/command_line.py the command lines
    built from it (the installed package needs both); the root config.py only re-exports them, every public name,
    so `from config import X` and the package see one object."""
    from face_match_age import command_line, settings

    root = ast.parse((ROOT / "config.py").read_text())
    assert not [node for node in ast.walk(root) if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.Lambda)]
    assigned = [target.id for node in root.body if isinstance(node, ast.Assign) for target in node.targets]
    assert assigned == ["__all__"]
    owner = {}
    for module in (settings, command_line):
        for node in ast.parse(Path(module.__file__).read_text()).body:
            names: set[str] = set()
            if isinstance(node, ast.ClassDef | ast.FunctionDef):
                names = {node.name}
            elif isinstance(node, ast.Assign):
                names = {target.id for target in node.targets if isinstance(target, ast.Name)}
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):  # NAME: type = value
                names = {node.target.id}
            owner |= {name: module for name in names if not name.startswith("_")}
    assert sorted(config.__all__) == sorted(owner)
    assert all(getattr(config, name) is getattr(owner[name], name) for name in config.__all__)


@pytest.mark.slow  # config.py in a process of its own
def test_running_config_py_lists_every_setting_with_its_default_and_reason():
    result = processes.run(
        [sys.executable, str(ROOT / "config.py")], "config.py", cwd=ROOT, capture_output=True, text=True, check=True
    )
    lines = result.stdout.splitlines()
    assert "batch_size = 256  # fits a 24 GB GPU at 160x160 in mixed precision; lower it if memory runs out" in lines
    assert "best_checkpoint = 'checkpoints/best.ckpt'  # age model that inference loads by default" in lines
    assert "# face detection" in lines
    listed = [line.split(" = ")[0] for line in lines if " = " in line]
    assert sorted(listed) == sorted(f.name for f in dataclasses.fields(Config))


def test_every_field_says_why():
    for f in dataclasses.fields(Config):
        assert len(f.metadata.get("why", "")) > 10, f.name


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
    assert c.batch_size == 64
    assert c.learning_rate == 0.001
    assert c.train_dir == Path("x/y")
    assert c.pretrained == "none"
    assert c.checkpoint_dir == Path("out")
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


def test_a_value_of_the_wrong_type_is_one_usage_line_naming_its_option(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_config(_parser("batch_size"), ["--batch-size", "x"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == "error: --batch-size: expected int, got x"
    (tmp_path / "run.yaml").write_text("batch_size: many\n")
    with pytest.raises(SystemExit):
        parse_config(_parser("batch_size"), ["--config", str(tmp_path / "run.yaml")])
    assert capsys.readouterr().err.splitlines()[-1] == "error: --batch-size: expected int, got many"


def test_replace_rejects_unknown_field_names():
    with pytest.raises(ValueError, match=r"unknown config field 'batchsize' \(did you mean 'batch_size'\?\)"):
        Config().replace(batchsize=3)
    with pytest.raises(ValueError, match="unknown config field"):
        add_config_arguments(ConfigArgumentParser(), ["no_such_field"])


def test_resolved_config_is_saved_and_read_back(tmp_path):
    c = Config().replace(batch_size=32, train_dir=Path("a/b"))
    path = save_config(c, tmp_path / "run", extra={"script": "train.py"})
    saved = json.loads(path.read_text())
    assert saved["batch_size"] == 32
    assert saved["train_dir"] == "a/b"
    assert saved["script"] == "train.py"
    assert load_config(path) == c
    assert not list((tmp_path / "run").glob("*.tmp"))


def test_stray_positional_arguments_are_named(capsys):
    with pytest.raises(SystemExit):
        parse_config(_parser("batch_size"), ["--batch-size", "3", "stray"])
    assert "unexpected argument stray" in capsys.readouterr().err


def test_an_optional_path_field_is_an_option_that_takes_a_path():
    parser = ConfigArgumentParser()
    add_config_arguments(parser, ["resume_checkpoint"])
    _, config = parse_config(parser, ["--resume", "runs/last.ckpt"])
    assert config.resume_checkpoint == Path("runs/last.ckpt")


@pytest.mark.parametrize(
    ("script", "argv"),
    [
        ("infer", ["compare", "a.jpg", "b.jpg", "out"]),
        ("evaluate", ["verify", "--pairs", "pairs.csv", "--out", "out"]),
        ("evaluate", ["retrieve", "--csv", "labels.csv", "--images", "photos", "--out", "out"]),
    ],
)
def test_inference_options_set_their_fields_in_every_script_that_runs_the_networks(script, argv):
    parser = importlib.import_module(script).build_parser()
    _, parsed = parse_config(parser, [*argv, "--precision", "bf16", "--no-channels-last", "--compile"])
    assert parsed.inference_precision == "bf16"
    assert parsed.channels_last is False
    assert parsed.compile_networks is True


def test_inference_options_default_to_auto_channels_last_and_no_compilation():
    assert Config().inference_precision == "auto"
    assert Config().channels_last is True
    assert Config().compile_networks is False


# --- --help: headings, defaults, examples, exit codes --------------------------------------------------

SCRIPT_HELP_HEADINGS = {
    "train": ("data:", "model:", "training:", "hardware:", "output:"),
    "infer compare": ("data:", "model:", "face detection:", "hardware:", "output:"),
    "infer age": ("data:", "model:", "face detection:", "hardware:"),
    "infer pairs": ("data:", "model:", "face detection:", "hardware:"),
    "infer folder": ("data:", "model:", "face detection:", "hardware:", "output:"),
    "data_prep": ("data:", "face detection:", "hardware:", "output:"),
    "model": ("model:", "hardware:"),
    "bench.infer": ("data:", "model:", "hardware:", "benchmark:"),
    "bench.prep": ("data:",),
    "bench.train": ("data:", "model:", "training:", "hardware:", "benchmark:"),
    "bench.floor": ("data:", "model:", "output:"),
}
EVALUATE_HELP_HEADINGS = {
    "age": ("data:", "model:", "hardware:", "output:"),
    "verify": ("data:", "model:", "hardware:", "output:"),
    "retrieve": ("data:", "hardware:", "output:"),
    "leakage": ("data:",),
}


def _help_of(module_name: str, argv: list[str], capsys) -> str:
    module = importlib.import_module(module_name)
    with pytest.raises(SystemExit) as exit_info:
        module.main([*argv, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("script", sorted(SCRIPT_HELP_HEADINGS))
def test_every_script_help_has_headings_examples_and_exit_codes(script, capsys):
    module, *command = script.split()
    text = _help_of(module, command, capsys)
    for heading in SCRIPT_HELP_HEADINGS[script]:
        assert f"\n{heading}\n" in text, heading
    assert "\nexamples:\n  uv run python " in text
    assert "\nexit codes:\n  0 " in text
    assert "\n  2    bad command line" in text


@pytest.mark.parametrize("command", sorted(EVALUATE_HELP_HEADINGS))
def test_every_evaluate_command_help_has_headings_examples_and_exit_codes(command, capsys):
    text = _help_of("evaluate", [command], capsys)
    for heading in EVALUATE_HELP_HEADINGS[command]:
        assert f"\n{heading}\n" in text, heading
    assert f"\nexamples:\n  uv run python evaluate.py {command} " in text
    assert "\nexit codes:\n  0 " in text


def test_evaluate_help_lists_every_command_with_examples(capsys):
    text = _help_of("evaluate", [], capsys)
    for command in EVALUATE_HELP_HEADINGS:
        assert f"uv run python evaluate.py {command} " in text
    assert "\nexit codes:\n" in text


def test_help_shows_the_default_of_config_and_hand_added_options(capsys):
    text = " ".join(_help_of("infer", ["compare"], capsys).split())  # argparse wraps lines where the terminal ends
    assert "cosine similarity above which two faces count as one person (default: 0.7)" in text
    assert f"where the networks run: {config.DEVICE_HELP} (default: auto)" in text


def _script_parsers():
    import data_prep
    import evaluate
    import infer
    import train

    parsers = {"train": train.build_parser(), "infer": infer.build_parser(), "data_prep": data_prep.build_parser()}
    commands = {f"evaluate {name}": parser for name, parser in evaluate.build_parser().commands.items()}
    commands |= {f"infer {name}": parser for name, parser in infer.build_parser().commands.items()}
    return parsers | commands


def _option_fields(parser) -> set[str]:
    return {action.dest for action in parser.options} & set(config.field_names())


def test_every_config_field_is_an_option_of_a_script():
    import model
    from face_match_age.service import command

    parsers = [*_script_parsers().values(), model.build_parser(), command.build_parser()]
    reachable = set().union(*(_option_fields(parser) for parser in parsers))
    assert sorted(set(config.field_names()) - reachable) == []


def test_train_takes_every_setting_of_the_network_it_trains_and_of_its_logs():
    import train

    wanted = {"head_hidden_dim", "head_dropout", "logged_sample_faces", "figure_sample_size"}
    wanted |= set(config.settings_that_change("training"))
    assert wanted - _option_fields(train.build_parser()) == set()


def test_every_option_of_every_script_is_described():
    undescribed = [
        f"{script} {action.option_strings or action.metavar}"
        for script, parser in _script_parsers().items()
        for action in parser.options
        if len(action.help or "") < 10
    ]
    assert undescribed == []


def test_help_epilog_lists_examples_then_every_exit_code_in_order():
    text = config.help_epilog(["uv run python x.py --go"], {130: "interrupted", 0: "done"})
    assert text.splitlines() == [
        "examples:",
        "  uv run python x.py --go",
        "",
        "exit codes:",
        "  0    done",
        "  2    bad command line: an unknown option, a bad value, options that do not go together, an",
        "       unusable --config file, or a --device or --precision this machine cannot run",
        "  130  interrupted",
    ]


# --- unknown options: suggestions from the parser's own record, no argparse internals --------------------


def test_an_unknown_option_is_matched_against_hand_added_grouped_options(capsys):
    parser = ConfigArgumentParser(prog="script")
    parser.group("output").add_argument("--json", action="store_true", help="also write the JSON file")
    with pytest.raises(SystemExit):
        parser.parse_args(["--jsno"])
    assert "did you mean --json?" in capsys.readouterr().err


def test_an_unknown_option_of_a_subcommand_is_matched_against_its_options(capsys):
    import evaluate

    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["age", "--out", "x", "--imagse", "y"])
    assert exit_info.value.code == 2
    assert "did you mean --images?" in capsys.readouterr().err


# --- --data-dir ------------------------------------------------------------------------------------------


def test_data_dir_fills_the_four_data_paths_in_data_preps_layout():
    import train

    _, c = parse_config(train.build_parser(), ["--data-dir", "data/MINE"])
    paths = (c.train_dir, c.val_dir, c.train_csv, c.val_csv)
    assert paths == tuple(Path("data/MINE") / name for name in ("train_images", "val_images", "train.csv", "val.csv"))


def test_a_data_path_after_data_dir_replaces_its_path_and_one_before_is_replaced():
    import train

    _, c = parse_config(train.build_parser(), ["--data-dir", "data/MINE", "--val-csv", "mine/other.csv"])
    assert c.val_csv == Path("mine/other.csv")
    assert c.train_csv == Path("data/MINE/train.csv")
    _, c = parse_config(train.build_parser(), ["--val-csv", "mine/other.csv", "--data-dir", "data/MINE"])
    assert c.val_csv == Path("data/MINE/val.csv")


# --- --config --------------------------------------------------------------------------------------------


def _saved_run(tmp_path, **changes) -> Path:
    return save_config(Config().replace(**changes), tmp_path / "run", extra={"script": "train.py"})


def test_config_file_values_are_applied(tmp_path):
    import train

    saved = _saved_run(tmp_path, batch_size=12, head_dropout=0.4, train_dir=Path("a/train"))
    _, c = parse_config(train.build_parser(), ["--config", str(saved)])
    assert (c.batch_size, c.head_dropout, c.train_dir) == (12, 0.4, Path("a/train"))


def test_command_line_options_override_the_config_file(tmp_path):
    import train

    saved = _saved_run(tmp_path, batch_size=12, learning_rate=0.5)
    _, c = parse_config(train.build_parser(), ["--config", str(saved), "--batch-size", "7"])
    assert c.batch_size == 7
    assert c.learning_rate == 0.5
    # In order, as in LightningCLI: the file replaces an option given before it.
    _, c = parse_config(train.build_parser(), ["--batch-size", "7", "--config", str(saved)])
    assert c.batch_size == 12


def test_data_dir_on_the_command_line_replaces_the_config_files_paths(tmp_path):
    import train

    saved = _saved_run(tmp_path, train_csv=Path("old/train.csv"), val_dir=Path("old/val_images"))
    _, c = parse_config(train.build_parser(), ["--config", str(saved), "--data-dir", "new"])
    assert (c.train_csv, c.val_dir) == (Path("new/train.csv"), Path("new/val_images"))


def _usage_error(parser, argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        parse_config(parser, argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err.splitlines()[-1]


def test_unknown_keys_in_a_config_file_are_named(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"batch_sise": 3, "script": "train.py", "batch_size": 4}))
    line = _usage_error(_parser("batch_size"), ["--config", str(path)], capsys)
    assert "--config " + str(path) in line
    assert "'batch_sise' (did you mean 'batch_size'?)" in line


def test_a_missing_config_file_is_a_one_line_usage_error(tmp_path, capsys):
    line = _usage_error(_parser("batch_size"), ["--config", str(tmp_path / "nope.json")], capsys)
    assert line == f"error: --config {tmp_path / 'nope.json'}: cannot read it (No such file or directory)"


def test_a_config_file_that_is_not_json_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "config.json").write_text("batch_size = 3\n")
    line = _usage_error(_parser("batch_size"), ["--config", str(tmp_path / "config.json")], capsys)
    assert "not a JSON file" in line


def test_an_invalid_value_in_a_config_file_is_a_usage_error(tmp_path, capsys):
    saved = _saved_run(tmp_path)
    values = json.loads(saved.read_text()) | {"val_ratio": 3}
    saved.write_text(json.dumps(values))
    line = _usage_error(_parser("batch_size", "val_ratio"), ["--config", str(saved)], capsys)
    assert "val_ratio must lie strictly between 0 and 1" in line


def test_a_config_file_sets_only_the_fields_the_script_takes(tmp_path):
    saved = _saved_run(tmp_path, batch_size=12, learning_rate=0.5)
    _, c = parse_config(_parser("batch_size"), ["--config", str(saved)])
    assert c == Config(batch_size=12)


def test_a_yaml_config_file_is_read_like_a_json_one(tmp_path):
    import train

    path = tmp_path / "run.yaml"
    path.write_text("batch_size: 12\nhead_dropout: 0.4\nlearning_rate: 1e-4\ntrain_dir: a/train\nscript: train.py\n")
    _, c = parse_config(train.build_parser(), ["--config", str(path), "--head-hidden-dim", "128"])
    assert (c.batch_size, c.head_dropout, c.learning_rate, c.train_dir) == (12, 0.4, 1e-4, Path("a/train"))
    assert c.head_hidden_dim == 128


def test_a_config_file_that_is_not_yaml_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "run.yml").write_text("batch_size: [\n")
    line = _usage_error(_parser("batch_size"), ["--config", str(tmp_path / "run.yml")], capsys)
    assert f"--config {tmp_path / 'run.yml'}: not a YAML file" in line


def test_print_config_prints_the_resolved_config_that_config_reads_back(tmp_path, capsys):
    import train

    saved = _saved_run(tmp_path, batch_size=12, learning_rate=0.5)
    argv = ["--config", str(saved), "--head-dropout", "0.3", "--data-dir", "data/MINE", "--print_config"]
    with pytest.raises(SystemExit) as exit_info:
        parse_config(train.build_parser(), argv)
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "head_dropout: 0.3\n" in printed
    (tmp_path / "printed.yaml").write_text(printed)
    _, again = parse_config(train.build_parser(), ["--config", str(tmp_path / "printed.yaml")])
    _, direct = parse_config(train.build_parser(), argv[:-1])
    assert again == direct
    assert (again.batch_size, again.learning_rate, again.train_csv) == (12, 0.5, Path("data/MINE/train.csv"))


def test_every_key_a_script_saves_beside_the_fields_is_accepted(tmp_path):
    saved = save_config(Config(), tmp_path, extra=dict.fromkeys(config.RUN_RECORD_KEYS, "x"))
    assert load_config(saved) == Config()


# --- --devices -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "value"), [("auto", "auto"), ("2", 2), ("0,1", [0, 1]), (" 3 ", 3)])
def test_devices_text_is_read_one_way_for_every_script(text, value):
    assert config.devices_value(text) == value


@pytest.mark.parametrize("text", ["0", "-1", "two", "0,", ""])
def test_devices_that_mean_nothing_are_invalid(text):
    with pytest.raises(ValueError, match="devices must be auto, a count of 1 or more, or GPU indices"):
        Config(devices=text)


def test_batch_processes_are_the_count_given():
    from face_match_age.device import batch_process_count

    assert batch_process_count("3", "cpu") == 3


def test_auto_batch_processes_on_cpu_are_one():
    from face_match_age.device import batch_process_count

    assert batch_process_count("auto", "cpu") == 1


def test_gpu_indices_for_a_batch_are_refused_with_what_to_do_instead():
    from face_match_age.device import batch_process_count

    with pytest.raises(ValueError, match=r"CUDA_VISIBLE_DEVICES=0,1 and --devices 2"):
        batch_process_count("0,1", "cuda")
