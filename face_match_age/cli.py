"""Faces in photos: the age of every face, and whether two photos show the same person.

One command line for infer.py and the installed face-match-age command:

  compare IMG1 IMG2 OUT_DIR   age of each photo's face and whether they are one person: OUT_DIR/{stem1}_vs_{stem2}_
                              result.jpg (and, with --json, ..._data.json)
  age PHOTO... OUT_DIR        every face of each photo with its age: OUT_DIR/{stem}_age_result.jpg (each face boxed,
                              "42 ± 5 years") and {stem}_age_data.json (one entry per face)
  pairs CSV OUT_DIR           many pairs: OUT_DIR/results.jsonl and results.csv, streamed and resumable
  folder DIR OUT_DIR          the matches and people of a collection: each photo embedded once into OUT_DIR/embeddings
                              (resumable), then faces.csv, matches.csv, clusters.csv and each person's timeline
  serve                       the models behind an HTTP service (see `serve --help`)

The seed's shortest forms still work: `IMG1 IMG2 OUT_DIR` is compare, `PHOTO OUT_DIR` is age, and
`--pairs CSV OUT_DIR` and `--folder DIR OUT_DIR` are pairs and folder. Each command's options: COMMAND --help.
"""

# This module is infer.py's command line (the root infer.py runs its `main`) and the installed package's
# `face-match-age` command (pyproject.toml's [project.scripts]); its docstring above is their --help text.

from __future__ import annotations

import argparse
import functools
import importlib
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from face_match_age.command_line import (
    ConfigArgumentParser,
    add_config_arguments,
    help_epilog,
    parse_config,
    text_type,
)

# Only what parsing the command line needs is imported here: --help, a bad option and a missing input are
# answered before torch, facenet-pytorch and the networks are imported (seconds on a cold start); the
# functions below import those where they use them.
from face_match_age.error_messages import out_of_memory_message, print_error
from face_match_age.exit_codes import ExitCode
from face_match_age.files.column_mapping import PAIR_COLUMNS, add_columns_option
from face_match_age.files.output_files import (
    OutputError,
    disk_full_message,
    is_disk_full,
    prepare_out_dir,
    unique_stem,
    write_atomically,
    write_json,
)
from face_match_age.processes import StopSignals
from face_match_age.settings import Config

if TYPE_CHECKING:
    from face_match_age.inference.analyzer import FaceAnalyzer, PhotoAnalysis
    from face_match_age.match_rule import MatchRule

# The exit codes, as face_match_age.exit_codes defines them for every script (names kept for infer.py's users).
EXIT_OK, EXIT_USAGE, EXIT_INPUT, EXIT_NO_FACE = ExitCode.OK, ExitCode.USAGE, ExitCode.INPUT, ExitCode.NO_FACE
EXIT_OUTPUT, EXIT_MODEL, EXIT_PAIRS_FAILED = ExitCode.OUTPUT, ExitCode.MODEL, ExitCode.PARTIAL
EXIT_OUT_OF_MEMORY = ExitCode.OUT_OF_MEMORY
EXIT_INTERRUPTED = ExitCode.INTERRUPTED  # the shell's code for a process ended by Ctrl-C (128 + SIGINT)
EXIT_TERMINATED = ExitCode.TERMINATED  # the same for SIGTERM (128 + 15): a scheduler's stop, which takes Ctrl-C's path

# The subcommands: name -> what its --help says. `serve` lives in its own module, imported only when run.
COMMANDS = {
    "compare": "age of each photo's face and whether the two photos show the same person",
    "age": "every face of each photo with its age: an annotated JPG and a JSON per photo",
    "pairs": "many pairs from a CSV: results.jsonl and results.csv, resumable",
    "folder": "the matches and people of a photo collection, resumable",
    "serve": "the models behind an HTTP service (face_match_age.service)",
}
# Commands run by another module's `main(argv) -> int`, imported only when chosen: "module:function".
DELEGATED = {"serve": "face_match_age.service.command:main"}
# The config fields each command takes as options (add_config_arguments).
DETECTION_OPTIONS = ("mtcnn_margin", "mtcnn_min_face_size", "detection_max_side")
NETWORK_OPTIONS = ("device", "inference_batch_size", "inference_precision", "channels_last", "compile_networks")
COMMAND_OPTIONS = {
    "compare": ("best_checkpoint", "verification_threshold", "face_selection", *DETECTION_OPTIONS, *NETWORK_OPTIONS),
    "age": ("best_checkpoint", *DETECTION_OPTIONS, *NETWORK_OPTIONS),
    "pairs": (
        "best_checkpoint",
        "verification_threshold",
        "face_selection",
        *DETECTION_OPTIONS,
        "devices",
        *NETWORK_OPTIONS,
    ),
    "folder": (
        "best_checkpoint",
        "verification_threshold",
        "face_selection",
        *DETECTION_OPTIONS,
        "devices",
        *NETWORK_OPTIONS,
    ),
}
INFER_OPTIONS = tuple(dict.fromkeys(name for names in COMMAND_OPTIONS.values() for name in names))
# What each command's namespace holds once parsed, whatever options that command has (see _complete).
ARGUMENT_DEFAULTS = {
    "pairs": None,
    "folder": None,
    "photos": None,
    "reference": None,
    "files": None,
    "merge_from": None,
    "top_k": None,
    "embed_only": False,
    "columns": None,
    "no_age": False,
    "all_faces": False,
    "tta": False,
    "verify_weights": None,
    "calibration": None,
    "json": False,
}
EXAMPLES = (
    "uv run python infer.py compare IMG1 IMG2 OUT_DIR [--json]       # one pair (or: infer.py IMG1 IMG2 OUT_DIR)",
    "uv run python infer.py age PHOTO [PHOTO...] OUT_DIR             # every face's age (or: infer.py PHOTO OUT_DIR)",
    "uv run python infer.py pairs pairs.csv OUT_DIR                  # many pairs: results.jsonl + results.csv",
    "uv run python infer.py folder DIR OUT_DIR [--top-k 5]           # the matches and people of a collection",
    "uv run python infer.py folder DIR OUT_DIR --reference IMG       # a collection against one photo",
    "uv run python infer.py pairs pairs.csv OUT_DIR --devices 2      # a batch shared by 2 processes (GPUs)",
)
INSTALLED_NOTE = (
    "Installed from the package (pip install face_match_age-*.whl), the same command is face-match-age: "
    "face-match-age compare IMG1 IMG2 OUT_DIR takes what infer.py compare takes."
)
EXIT_CODES = {
    ExitCode.OK: "done",
    ExitCode.USAGE: "bad command line: an unknown option, a bad value or an unusable --config file; or a --device "
    "or --precision this machine cannot run",
    ExitCode.INPUT: "unreadable input (missing, folder, not an image, truncated, too large); an unusable "
    "--calibration file counts as one",
    ExitCode.NO_FACE: "no face found in a photo (compare, or age of one photo)",
    ExitCode.OUTPUT: "OUT_DIR cannot be written (a full disk too), or it holds another batch's results, or another "
    "run is writing to it",
    ExitCode.MODEL: "a model cannot be loaded: an age checkpoint named with --ckpt that is missing, a damaged or "
    "unsafe one, or the verification weights (a missing default checkpoint only leaves the ages empty, except "
    "for age, which needs one)",
    ExitCode.PARTIAL: "a batch finished but some pairs failed (see their rows), or some photos of folder (see "
    "faces.csv) or of age (see their lines)",
    ExitCode.OUT_OF_MEMORY: "the device ran out of memory running the networks (lower --inference-batch-size)",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C); a batch keeps its rows, folder its embeddings, and the same command "
    "resumes it",
    ExitCode.TERMINATED: "stopped by SIGTERM (a scheduler's stop), kept and resumed as for 130",
}


def build_parser() -> ConfigArgumentParser:
    """The command line: one subcommand per mode (COMMANDS). `parse_command` reads the seed's shortest forms
    into the same subcommands."""
    parser = ConfigArgumentParser(description=__doc__, epilog=help_epilog(EXAMPLES, EXIT_CODES, INSTALLED_NOTE))
    commands = parser.add_commands(dest="command", metavar="{" + ",".join(COMMANDS) + "}")
    for name in ("compare", "age", "pairs", "folder"):
        _add_mode_command(commands, name)
    # Listed in --help; its own module parses its arguments (main hands them over before this parser runs).
    commands.add("serve", help=COMMANDS["serve"], add_help=False)
    return parser


def _add_mode_command(commands, name: str) -> ConfigArgumentParser:
    command = commands.add(
        name,
        help=COMMANDS[name],
        description=f"{COMMANDS[name][0].upper()}{COMMANDS[name][1:]}.",
        epilog=help_epilog(
            [example for example in EXAMPLES if f" {name} " in example], _command_exit_codes(name), INSTALLED_NOTE
        ),
    )
    data, model, output = (command.group(key) for key in ("data", "model", "output"))
    if name == "compare":
        data.add_argument("img1", metavar="IMG1", help="the first photo")
        data.add_argument("img2", metavar="IMG2", help="the second photo")
    elif name == "age":
        data.add_argument("photos", nargs="+", metavar="PHOTO", help="a photo; give as many as you like")
    elif name == "pairs":
        data.add_argument("pairs", type=Path, metavar="CSV", help="CSV with columns img1, img2 and optionally label")
        add_columns_option(data, PAIR_COLUMNS, "pairs CSV", "img1=file_a,img2=file_b,label=same")
    else:
        data.add_argument("folder", type=Path, metavar="DIR", help="the photos of this folder (sub-folders included)")
        _add_folder_options(command)
    data.add_argument("out_dir", metavar="OUT_DIR", help="folder for the results (created when missing)")
    if name != "age":
        model.add_argument(
            "--no-age",
            action="store_true",
            help="verification only: no age model is loaded (without one at the default checkpoint and no --ckpt, "
            "that happens anyway, with a note)",
        )
        model.add_argument(
            "--calibration",
            type=Path,
            help="calibration.json from evaluate.py verify --calibrate: "
            "a threshold per predicted age gap instead of --threshold",
        )
    if name in ("compare", "pairs"):
        model.add_argument("--all-faces", action="store_true", help="every face of IMG1 against every face of IMG2")
    model.add_argument("--tta", action="store_true", help="average each face with its mirror image")
    model.add_argument(
        "--verify-weights",
        type=Path,
        help="InceptionResnetV1 weight file for verification (default: VGGFace2 from $TORCH_HOME/checkpoints)",
    )
    if name == "compare":
        output.add_argument("--json", action="store_true", help="also write {stem1}_vs_{stem2}_data.json")
    add_config_arguments(command, COMMAND_OPTIONS[name])
    return command


def _add_folder_options(command: ConfigArgumentParser) -> None:
    data, output = command.group("data"), command.group("output")
    data.add_argument("--reference", type=Path, help="compare every photo against this one")
    data.add_argument(
        "--files",
        type=Path,
        metavar="LIST",
        help="only the photos this file names, one per line, relative to the folder (one shard of a collection "
        "spread over machines)",
    )
    data.add_argument(
        "--merge-from",
        type=text_type(Path),
        action="append",
        metavar="SHARD_OUT",
        help="start OUT_DIR's embeddings from this shard's OUT_DIR (made with --files); repeat it for each shard",
    )
    output.add_argument(
        "--top-k",
        type=int,
        metavar="K",
        help="each photo's K most similar photos in matches.csv, matches or not (default: every pair above the "
        "threshold)",
    )
    output.add_argument("--embed-only", action="store_true", help="embed into OUT_DIR/embeddings and stop (a shard)")


def _command_exit_codes(name: str) -> dict:
    """The exit codes `name` can end with, and what each means there."""
    left_out = {"compare": (ExitCode.PARTIAL,), "pairs": (ExitCode.NO_FACE,), "folder": (ExitCode.NO_FACE,)}
    return {code: text for code, text in EXIT_CODES.items() if code not in left_out.get(name, ())}


# --- reading the command line ----------------------------------------------------------------------------


def parse_command(argv: list[str] | None = None, parser: ConfigArgumentParser | None = None):
    """(args, config) for a command line of a mode, subcommand or shortest form; args.command names the mode."""
    argv = sys.argv[1:] if argv is None else [str(argument) for argument in argv]
    parser = parser or build_parser()
    if not argv:
        parser.error("give a command (" + ", ".join(COMMANDS) + ") or IMG1 IMG2 OUT_DIR; run with --help")
    args, config = parse_config(parser, command_line(argv, parser))
    return _complete(args), config


def command_line(argv: list[str], parser: ConfigArgumentParser) -> list[str]:
    """`argv` as a subcommand's command line: the seed's shortest forms read as the commands they are
    (IMG1 IMG2 OUT_DIR: compare; PHOTO OUT_DIR: age; --pairs CSV OUT_DIR: pairs; --folder DIR OUT_DIR: folder).
    A command name after options (`--device cpu age a.jpg out`) is moved first."""
    if argv[0] in COMMANDS or argv[0] in ("-h", "--help"):
        return argv
    flags = _value_flags(parser)
    rest, positionals, modes, index = [], [], [], 0
    while index < len(argv):
        argument = argv[index]
        name, has_value = argument.split("=", 1)[0], "=" in argument
        if argument == "--":
            positionals += argv[index + 1 :]
            rest += argv[index:]
            break
        if name in ("--pairs", "--folder"):  # the old flags: their value is the new command's first argument
            value = argument.split("=", 1)[1] if has_value else (argv[index + 1] if index + 1 < len(argv) else None)
            if value is None:
                parser.error(f"{name} needs a value: {name} {name[2:].upper()} OUT_DIR")
            modes.append((name[2:], value))
            index += 1 if has_value else 2
            continue
        rest.append(argument)
        if argument.startswith("-") and argument != "-":
            if name in flags and not has_value and index + 1 < len(argv):
                rest.append(argv[index + 1])
                index += 1
        else:
            positionals.append(argument)
        index += 1
    if len(modes) > 1:
        parser.error("give one of --pairs and --folder (or the commands: pairs CSV OUT_DIR, folder DIR OUT_DIR)")
    if modes:
        return [modes[0][0], modes[0][1], *rest]
    if positionals and positionals[0] in COMMANDS:
        rest.remove(positionals[0])
        return [positionals[0], *rest]
    if len(positionals) == 3:
        return ["compare", *rest]
    if len(positionals) == 2:
        return ["age", *rest]
    parser.error(
        f"give IMG1 IMG2 OUT_DIR (compare) or PHOTO OUT_DIR (age), not {len(positionals)} path"
        + ("" if len(positionals) == 1 else "s")
        + "; or a command: "
        + ", ".join(f"{name} ..." for name in COMMANDS)
        + " (run with --help)"
    )


def _value_flags(parser: ConfigArgumentParser) -> set[str]:
    """Every option of the mode commands that takes a value (its next argument is not a path)."""
    return {
        option
        for name in ("compare", "age", "pairs", "folder")
        for action in parser.commands[name].options
        if action.nargs != 0
        for option in action.option_strings
    }


def _complete(args: argparse.Namespace) -> argparse.Namespace:
    """Every attribute the run functions read, whichever command was parsed (see ARGUMENT_DEFAULTS), and
    `paths` as the seed's modes had it: IMG1 IMG2 OUT_DIR, or OUT_DIR alone."""
    for name, value in ARGUMENT_DEFAULTS.items():
        if not hasattr(args, name):
            setattr(args, name, value)
    args.paths = [args.img1, args.img2, args.out_dir] if args.command == "compare" else [args.out_dir]
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else [str(argument) for argument in argv]
    if argv and argv[0] in DELEGATED:
        return run_delegated(argv[0], argv[1:])
    parser = build_parser()
    args, config = parse_command(argv, parser)
    if args.command == "folder":
        _check_folder_options(parser, args)
    if missing := _missing_input(args):  # before importing torch: an instant answer
        return _fail(missing, EXIT_INPUT)
    from face_match_age.device import (
        DeviceUnavailableError,
        batch_process_count,
        resolve_device,
        resolve_inference_precision,
    )

    batch = args.command in ("pairs", "folder")
    try:
        # Resolved once here: a usage error before any model loads, and what config.json and batch.json record.
        config = config.replace(
            inference_precision=resolve_inference_precision(config.inference_precision, resolve_device(config.device))
        )
        processes = batch_process_count(config.devices, config.device) if batch else 1
    except DeviceUnavailableError as error:  # a real option this machine cannot honour: one line, no usage text
        return _fail(error, EXIT_USAGE)
    except ValueError as error:
        parser.error(str(error))
    age_model = age_model_status(args, config)
    if args.command == "age" and not age_model["loaded"]:
        return _fail(age_model["reason"], EXIT_MODEL)
    if not age_model["loaded"] and not args.no_age:
        print(f"note: {age_model['reason']}; add --no-age to skip this note", file=sys.stderr)
    # SIGTERM, to this process alone or to its whole group, takes the path of Ctrl-C below.
    with StopSignals() as stop:
        return _run_mode(args, config, processes, age_model, stop)


def run_delegated(name: str, argv: list[str]) -> int:
    """A command whose own module parses and runs it (DELEGATED), imported only now; one line when this
    installation lacks that module."""
    module_name, function = DELEGATED[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name is None or not module_name.startswith(error.name):  # the module itself, not what it imports
            raise
        print_error(f"the {name} command is not available in this installation ({module_name} is missing)")
        return EXIT_USAGE
    return int(getattr(module, function)(argv))


def _missing_input(args) -> str | None:
    """What a missing photo or pairs file would make load_image or read_pairs_csv say, checked without them."""
    if args.pairs is not None and not args.pairs.is_file():
        return f"pairs file {args.pairs} does not exist; check the path"
    if args.folder is not None and not args.folder.is_dir():
        what = "is a file, not a folder" if args.folder.exists() else "does not exist; check the path"
        return f"photo folder {args.folder} {what}"
    photos = {"compare": args.paths[:2], "age": args.photos}.get(args.command) or ()
    for path in map(Path, photos):
        if not path.exists():
            return f"cannot read image {path}: no such file"
        if path.is_dir():
            return f"cannot read image {path}: it is a folder, not a file"
    return None


def _run_mode(args, config: Config, processes: int, age_model: dict, stop: StopSignals) -> int:
    import torch

    from face_match_age.detection.faces import NoFaceError
    from face_match_age.detection.imaging import ImageLoadError
    from face_match_age.files.embedding_store import StoreError
    from face_match_age.files.photo_lists import PhotoListError
    from face_match_age.inference.batch import BatchInterrupted
    from face_match_age.inference.folder_embedding import FolderInterrupted
    from face_match_age.inference.folder_run import FolderInputError
    from face_match_age.inference.pair_specs import InputError
    from face_match_age.match_rule import CalibrationError, MatchRule
    from face_match_age.network.age_network import CheckpointError
    from face_match_age.network.weights import PretrainedWeightsError

    try:
        rule = MatchRule.from_calibration(args.calibration) if args.calibration else None
        rule = rule or MatchRule(config.verification_threshold)
        if args.command == "folder":
            return run_folder_command(args, config, rule, processes, age_model)
        if args.command == "pairs":
            return run_batches(args, config, rule, processes, age_model)
        if args.command == "age":
            return run_age(args, config, age_model)
        return run_pair(args, config, rule, age_model)
    except (ImageLoadError, InputError, CalibrationError, PhotoListError, FolderInputError, StoreError) as error:
        return _fail(error, EXIT_INPUT)
    except NoFaceError as error:
        return _fail(error, EXIT_NO_FACE)
    except OutputError as error:
        return _fail(disk_full_message(error.target, "another OUT_DIR") if is_disk_full(error) else error, EXIT_OUTPUT)
    except (CheckpointError, PretrainedWeightsError) as error:
        return _fail(error, EXIT_MODEL)
    except torch.OutOfMemoryError as error:  # torch.cuda.OutOfMemoryError too: a subclass
        lower = f"lower --inference-batch-size (now {config.inference_batch_size})"
        return _fail(out_of_memory_message(error, "running the networks", lower), EXIT_OUT_OF_MEMORY)
    except FolderInterrupted as interrupt:
        print(
            f"{stop.what}: {interrupt.embedded} photos kept in {interrupt.store}; rerun the same command to resume",
            file=sys.stderr,
        )
        return stop.exit_code
    except BatchInterrupted as interrupt:
        rows = f"{interrupt.rows} row{'' if interrupt.rows == 1 else 's'}"
        print(f"{stop.what}: {rows} kept in {interrupt.results}; rerun the same command to resume", file=sys.stderr)
        return stop.exit_code
    except KeyboardInterrupt:  # before a batch wrote anything, or in pair mode (whose files are written whole)
        again = {"pairs": "resume", "folder": "resume", "compare": "compare the pair", "age": "age the photos"}
        print(f"{stop.what}: rerun the same command to {again[args.command]}", file=sys.stderr)
        return stop.exit_code
    except OSError as error:  # a full disk met outside the result files (the embedding store, a sheet)
        if not is_disk_full(error):
            raise
        return _fail(disk_full_message(error.filename or args.paths[-1], "another OUT_DIR"), EXIT_OUTPUT)


def _check_folder_options(parser, args) -> None:
    if args.top_k is not None and args.top_k < 1:
        parser.error(f"--top-k must be at least 1, not {args.top_k}")
    if args.embed_only and (args.reference is not None or args.top_k is not None):
        parser.error("--embed-only stops before matching: drop --reference/--top-k")


def age_model_status(args, config: Config) -> dict:
    """Whether the age model is loaded and, when not, why: the results' `age_model` field. Only the default
    checkpoint may be missing (verification runs, ages are null); a --ckpt (or a --config naming another
    path) that does not exist stays an error, exit 6."""
    if args.no_age:
        return {"loaded": False, "reason": "--no-age: verification only"}
    named = "best_checkpoint" in args.given
    if named or Path(config.best_checkpoint).exists():
        return {"loaded": True, "reason": None}
    if getattr(args, "command", None) == "age":  # the ages are what `age` is for: no model is an error
        return {
            "loaded": False,
            "reason": f"no age model at {config.best_checkpoint} (the default checkpoint); train one with `uv run "
            "python train.py` (README: Quick start) or point --ckpt at a .ckpt file",
        }
    return {
        "loaded": False,
        "reason": f"no age model at {config.best_checkpoint} (the default checkpoint), so ages are null and only "
        "verification ran; train one with `uv run python train.py` (README: Quick start) or point --ckpt at a "
        ".ckpt file",
    }


def analyzer_factory(args, config: Config, age_model: dict) -> functools.partial:
    """FaceAnalyzer as the command line asks for it; call it with device=... (picklable for batch workers)."""
    from face_match_age.inference.analyzer import FaceAnalyzer

    return functools.partial(
        FaceAnalyzer,
        config,
        age_checkpoint=config.best_checkpoint,
        with_age=age_model["loaded"],
        verify_weights=args.verify_weights,
        tta=args.tta,
    )


def model_settings(args, config: Config, age_model: dict) -> dict:
    """What changes a row beyond the config: a rerun that differs in one of these is another batch (or, for
    --folder, another embedding store)."""
    from face_match_age.files.model_stamps import file_stamp
    from face_match_age.inference.analyzer import verification_weights_identity

    return {
        "tta": args.tta,
        "age_checkpoint": file_stamp(config.best_checkpoint) if age_model["loaded"] else None,
        "verify_weights": verification_weights_identity(args.verify_weights),
    }


def run_folder_command(args, config: Config, rule: MatchRule, processes: int, age_model: dict) -> int:
    from face_match_age.inference.folder_run import FolderRequest, run_folder

    request = FolderRequest(
        folder=args.folder,
        out_dir=Path(args.paths[0]),
        reference=args.reference,
        top_k=args.top_k,
        file_list=args.files,
        embed_only=args.embed_only,
        merge_from=args.merge_from or (),
        record={
            "folder": str(args.folder),
            "no_age": args.no_age,
            "tta": args.tta,
            "calibration": str(args.calibration) if args.calibration else None,
        },
    )
    outcome = run_folder(
        request,
        analyzer_factory(args, config, age_model),
        rule,
        config=config,
        settings=model_settings(args, config, age_model),
        devices=processes,
        device=config.device,
    )
    noun = ("row", "rows") if args.top_k else ("match", "matches")
    found = "embedded" if args.embed_only else f"{outcome.matches} {noun[outcome.matches != 1]}"
    failed = f" ({outcome.failed} without a face or unreadable)" if outcome.failed else ""
    photos = f"{outcome.photos} photo{'' if outcome.photos == 1 else 's'}"
    print(f"{photos}{failed}: {found} -> {', '.join(str(p) for p in outcome.written)}")
    return EXIT_PAIRS_FAILED if outcome.failed else EXIT_OK


def run_batches(args, config: Config, rule: MatchRule, processes: int, age_model: dict) -> int:
    from face_match_age.inference.batch import run_batch
    from face_match_age.inference.pair_specs import read_pairs_csv

    pairs = read_pairs_csv(args.pairs, args.columns)
    record = {
        "pairs": str(args.pairs),
        "no_age": args.no_age,
        "tta": args.tta,
        "all_faces": args.all_faces,
        "calibration": str(args.calibration) if args.calibration else None,
    }
    counts = run_batch(
        pairs,
        Path(args.paths[0]),
        analyzer_factory(args, config, age_model),
        rule,
        config=config,
        devices=processes,
        device=config.device,
        all_faces=args.all_faces,
        record=record,
        settings=model_settings(args, config, age_model),
        age_model=age_model,
    )
    return EXIT_PAIRS_FAILED if counts["failed"] else EXIT_OK


def run_pair(args, config: Config, rule: MatchRule, age_model: dict) -> int:
    from face_match_age.detection.imaging import load_image

    started = time.perf_counter()
    paths = [Path(p) for p in args.paths[:2]]
    photos = [load_image(path) for path in paths]  # unreadable input fails before any model is loaded
    out_dir = prepare_out_dir(Path(args.paths[2]))
    loaded = time.perf_counter()
    analyzer = analyzer_factory(args, config, age_model)(device=config.device)
    timings = {"read_photos": _ms(loaded - started), "load_models": _ms(time.perf_counter() - loaded)}
    result, written = compare_and_write(
        analyzer,
        paths,
        photos,
        out_dir,
        write_json_file=args.json,
        all_faces=args.all_faces,
        timings=timings,
        started=started,
        rule=rule,
        age_model=age_model,
    )
    print(summary_line(result), "->", ", ".join(str(p) for p in written))
    if result["error"]:
        print_error(
            f"{result['error']}: use photos where the face is visible, frontal and at least "
            f"{config.mtcnn_min_face_size} pixels wide"
        )
        return EXIT_NO_FACE
    return EXIT_OK


def run_age(args, config: Config, age_model: dict) -> int:
    """Every face of each photo with its age: OUT_DIR/{stem}_age_result.jpg and {stem}_age_data.json per photo.
    One photo ends as compare does (no face: 4, unreadable: 3); several end with 7 when some failed."""
    started = time.perf_counter()
    paths = [Path(p) for p in args.photos]
    out_dir = prepare_out_dir(Path(args.out_dir))
    analyzer = analyzer_factory(args, config, age_model)(device=config.device)
    timings = {"load_models": _ms(time.perf_counter() - started)}
    failures = []
    for path, analysis in zip(paths, analyzer.analyze_many(paths, all_faces=True, names=[str(p) for p in paths])):
        result, written = ages_and_write(analyzer, path, analysis, out_dir, timings=timings)
        if result is None:  # unreadable: nothing to draw or report on
            failures.append(EXIT_INPUT)
            print_error(analysis.error)
            continue
        print(age_summary_line(path, result), "->", ", ".join(str(p) for p in written))
        if result["error"]:
            failures.append(EXIT_NO_FACE)
            print_error(
                f"{result['error']}: use photos where faces are visible, frontal and at least "
                f"{config.mtcnn_min_face_size} pixels wide"
            )
    if not failures:
        return EXIT_OK
    return failures[0] if len(paths) == 1 else EXIT_PAIRS_FAILED


def ages_and_write(
    analyzer: FaceAnalyzer, path: Path, analysis: PhotoAnalysis, out_dir: Path, *, timings: dict | None = None
) -> tuple[dict | None, list[Path]]:
    """Write the annotated picture and the JSON of one analysed photo (every face with its age); (None, [])
    when the photo could not be read."""
    from face_match_age.detection.imaging import ImageLoadError, load_image
    from face_match_age.inference.annotate import ages_image

    if isinstance(analysis.failure, ImageLoadError):
        return None, []
    started = time.perf_counter()
    result = age_json(path, analysis, analyzer)
    stem = unique_stem(out_dir, f"{path.stem}_age", [str(path.resolve())])
    image_path = out_dir / f"{stem}_result.jpg"
    sources = json.dumps([str(path.resolve())]).encode()
    photo = load_image(path)
    write_atomically(
        image_path, lambda tmp: ages_image(photo, result).save(tmp, format="JPEG", quality=92, comment=sources)
    )
    result["timings_ms"] = {**(timings or {}), "write": _ms(time.perf_counter() - started)}
    return result, [image_path, write_json(out_dir / f"{stem}_data.json", result)]


def age_json(path: Path, analysis: PhotoAnalysis, analyzer: FaceAnalyzer) -> dict:
    """The age JSON of one photo: one entry per face (records.FaceResult), largest first as found."""
    return {
        "file": str(path),
        "size": list(analysis.size) if analysis.size else None,
        "faces": [face.to_json() for face in analysis.face_results()],
        "faces_found": len(analysis.faces),
        "error": analysis.error,
        "models": {
            "age_checkpoint": str(analyzer.age_checkpoint) if analyzer.age_checkpoint else None,
            "device": str(analyzer.device),
            "tta": analyzer.tta,
            **analyzer.network_settings,
        },
    }


def age_summary_line(path: Path, result: dict) -> str:
    """e.g. `photo.jpg: 2 faces: 42 ± 5, 31 ± 4 years`."""
    faces = result["faces"]
    if not faces:
        return f"{path.name}: no face found"
    ages = ", ".join(f"{face['age']:.0f} ± {face['age_std']:.0f}" for face in faces)
    return f"{path.name}: {len(faces)} face{'' if len(faces) == 1 else 's'}: {ages} years"


def compare_and_write(
    analyzer: FaceAnalyzer,
    paths: list[Path],
    photos: list,
    out_dir: Path,
    *,
    write_json_file: bool,
    all_faces: bool = False,
    timings: dict | None = None,
    started: float | None = None,
    rule: MatchRule | None = None,
    age_model: dict | None = None,
) -> tuple[dict, list[Path]]:
    """Analyse two loaded photos with warm models and write the annotated JPG (and the JSON).
    `rule`: when the pair matches (default: the config's verification_threshold); `age_model`:
    the results' age_model field (default: whether `analyzer` has one)."""
    from face_match_age.inference.analyzer import pair_result
    from face_match_age.inference.annotate import comparison_image
    from face_match_age.match_rule import MatchRule

    analysis_start = time.perf_counter()
    first, second = analyzer.analyze_many(photos, all_faces=all_faces, names=[str(p) for p in paths])
    rule = MatchRule(analyzer.config.verification_threshold) if rule is None else rule
    if age_model is None:
        loaded = analyzer.age_model is not None
        age_model = {"loaded": loaded, "reason": None if loaded else "the FaceAnalyzer was built with with_age=False"}
    record = pair_result(first, second, rule, files=(str(paths[0]), str(paths[1])))
    result = pair_json(record.to_json(), analyzer, age_model)
    result["timings_ms"] = {**(timings or {}), "analyze": _ms(time.perf_counter() - analysis_start)}
    stem = unique_stem(out_dir, f"{paths[0].stem}_vs_{paths[1].stem}", [str(p.resolve()) for p in paths])
    image_path = out_dir / f"{stem}_result.jpg"
    sources = json.dumps([str(p.resolve()) for p in paths]).encode()
    photo_1, photo_2 = photos
    write_atomically(
        image_path,
        lambda tmp: comparison_image(photo_1, photo_2, result).save(tmp, format="JPEG", quality=92, comment=sources),
    )
    written = [image_path]
    if write_json_file:
        result["timings_ms"]["total"] = _ms(time.perf_counter() - (started or analysis_start))
        written.append(write_json(out_dir / f"{stem}_data.json", result))
    return result, written


def pair_json(record: dict, analyzer: FaceAnalyzer, age_model: dict) -> dict:
    """The pair JSON: the pair's record (records.PairResult.to_json), then what pair mode adds
    (records.PAIR_JSON_AFTER: age_model, models, and timings_ms, which the caller fills in)."""
    return {
        **record,
        "age_model": age_model,
        "models": {
            "age_checkpoint": str(analyzer.age_checkpoint) if analyzer.age_checkpoint else None,
            "verification_weights": analyzer.verify_weights,
            "device": str(analyzer.device),
            "tta": analyzer.tta,
            "face_selection": analyzer.config.face_selection,
            **analyzer.network_settings,
        },
    }


def summary_line(result: dict) -> str:
    verification = result.get("verification")
    if verification is None:
        return f"NO DECISION ({result.get('error')})"
    verdict = "MATCH" if verification["is_match"] else "NO MATCH"
    ages = [result[key].get("age") for key in ("face_1", "face_2")]
    age_text = "" if None in ages else f"; ages {ages[0]:.0f} and {ages[1]:.0f}"
    return (
        f"{verdict}: similarity {verification['similarity']:.4f} vs threshold "
        f"{_figure(verification['threshold_used'])}{age_text}"
    )


def _figure(value) -> str:
    """A number at 4 decimals at most (a calibrated threshold has many), trailing zeros dropped."""
    return f"{value:.4f}".rstrip("0").rstrip(".") if isinstance(value, float) else str(value)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def _fail(error: BaseException | str, code: int) -> int:
    print_error(error)
    return code
