"""Compare faces: age of each and whether two photos show the same person.

Pair mode writes OUT_DIR/{stem1}_vs_{stem2}_result.jpg (and, with --json, ..._data.json). --pairs streams
OUT_DIR/results.jsonl and results.csv; a batch run again into the same OUT_DIR resumes where it stopped; OUT_DIR
holding another batch's results, or that another run is writing, is refused (5): choose another OUT_DIR.
--folder embeds each photo once into OUT_DIR/embeddings (resumable; a photo whose file changed is embedded
again) and writes faces.csv, matches.csv (only pairs above the threshold, or each
photo's --top-k best), clusters.csv and each person's age timeline: never all pairs.
Without an age model at the default checkpoint (and no --ckpt), verification still runs: ages are null, the
results' age_model field says why, and stderr says it once.
"""

# This module is infer.py's command line (the root infer.py runs its `main`) and the installed package's
# `face-match-age` command (pyproject.toml's [project.scripts]); its docstring above is their --help text.

from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

# Only what parsing the command line needs is imported here: --help, a bad option and a missing input are
# answered before torch, facenet-pytorch and the networks are imported (seconds on a cold start); the
# functions below import those where they use them.
from face_match_age.error_messages import out_of_memory_message, print_error
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
from face_match_age.settings import (
    DEVICE_HELP,
    Config,
    ConfigArgumentParser,
    add_config_arguments,
    help_epilog,
    parse_config,
)

if TYPE_CHECKING:
    from face_match_age.inference.analyzer import FaceAnalyzer
    from face_match_age.match_rule import MatchRule

EXIT_OK, EXIT_USAGE, EXIT_INPUT, EXIT_NO_FACE, EXIT_OUTPUT, EXIT_MODEL, EXIT_PAIRS_FAILED = 0, 2, 3, 4, 5, 6, 7
EXIT_INTERRUPTED = 130  # the shell's code for a process ended by Ctrl-C (128 + SIGINT)
EXIT_TERMINATED = 143  # the same for SIGTERM (128 + 15): a scheduler's stop, which takes Ctrl-C's path
INFER_OPTIONS = (
    "best_checkpoint",
    "verification_threshold",
    "face_selection",
    "mtcnn_margin",
    "mtcnn_min_face_size",
    "detection_max_side",
    "inference_batch_size",
    "devices",
    "inference_precision",
    "channels_last",
    "compile_networks",
)
EXAMPLES = (
    "uv run python infer.py IMG1 IMG2 OUT_DIR [--json] [--ckpt PATH]    # one pair: annotated JPG (+ JSON)",
    "uv run python infer.py --pairs pairs.csv OUT_DIR                    # many pairs: results.jsonl + results.csv",
    "uv run python infer.py --folder DIR OUT_DIR [--top-k 5]             # the matches and people of a collection",
    "uv run python infer.py --folder DIR --reference IMG OUT_DIR         # a collection against one photo",
    "uv run python infer.py --pairs pairs.csv OUT_DIR --devices 2        # a batch shared by 2 processes (GPUs)",
)
INSTALLED_NOTE = (
    "Installed from the package (pip install face_match_age-*.whl), the same command is face-match-age: "
    "face-match-age IMG1 IMG2 OUT_DIR takes what infer.py takes."
)
EXIT_CODES = {
    EXIT_OK: "done",
    EXIT_INPUT: "unreadable input (missing, folder, not an image, truncated, too large); an unusable "
    "--calibration file counts as one",
    EXIT_NO_FACE: "no face found in a photo",
    EXIT_USAGE: "bad command line: an unknown option, a bad value or an unusable --config file; or a --device "
    "this machine lacks",
    EXIT_OUTPUT: "OUT_DIR cannot be written (a full disk too), or it holds another batch's results, or another run "
    "is writing to it",
    EXIT_MODEL: "a model cannot be loaded: an age checkpoint named with --ckpt that is missing, a damaged or "
    "unsafe one, or the verification weights (a missing default checkpoint only leaves the ages empty); or the "
    "device ran out of memory running them",
    EXIT_PAIRS_FAILED: "a batch finished but some pairs failed (see their rows), or some photos of --folder (see "
    "faces.csv)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C); a batch keeps its rows, --folder its embeddings, and the same command "
    "resumes it",
    EXIT_TERMINATED: "stopped by SIGTERM (a scheduler's stop), kept and resumed as for 130",
}


def build_parser() -> ConfigArgumentParser:
    parser = ConfigArgumentParser(description=__doc__, epilog=help_epilog(EXAMPLES, EXIT_CODES, INSTALLED_NOTE))
    data, model, hardware, output = (parser.group(key) for key in ("data", "model", "hardware", "output"))
    data.add_argument("paths", nargs="*", metavar="PATH", help="IMG1 IMG2 OUT_DIR, or OUT_DIR with --pairs/--folder")
    data.add_argument("--pairs", type=Path, help="CSV with columns img1, img2 and optionally label")
    add_columns_option(data, PAIR_COLUMNS, "--pairs CSV", "img1=file_a,img2=file_b,label=same")
    data.add_argument("--folder", type=Path, help="match the photos of this folder (sub-folders included)")
    data.add_argument("--reference", type=Path, help="with --folder: compare every photo against this one")
    data.add_argument(
        "--files",
        type=Path,
        metavar="LIST",
        help="with --folder: only the photos this file names, one per line, relative to the folder (one shard of "
        "a collection spread over machines)",
    )
    data.add_argument(
        "--merge-from",
        type=Path,
        action="append",
        metavar="SHARD_OUT",
        help="with --folder: start OUT_DIR's embeddings from this shard's OUT_DIR (made with --files); repeat it "
        "for each shard",
    )
    output.add_argument(
        "--top-k",
        type=int,
        metavar="K",
        help="with --folder: each photo's K most similar photos in matches.csv, matches or not (default: every "
        "pair above the threshold)",
    )
    output.add_argument(
        "--embed-only", action="store_true", help="with --folder: embed into OUT_DIR/embeddings and stop (a shard)"
    )
    model.add_argument(
        "--no-age",
        action="store_true",
        help="verification only: no age model is loaded (without one at the default checkpoint and no --ckpt, "
        "that happens anyway, with a note)",
    )
    model.add_argument("--all-faces", action="store_true", help="every face of IMG1 against every face of IMG2")
    model.add_argument("--tta", action="store_true", help="average each face with its mirror image")
    model.add_argument(
        "--verify-weights",
        type=Path,
        help="InceptionResnetV1 weight file for verification (default: VGGFace2 from $TORCH_HOME/checkpoints)",
    )
    model.add_argument(
        "--calibration",
        type=Path,
        help="calibration.json from evaluate.py verify --calibrate: "
        "a threshold per predicted age gap instead of --threshold",
    )
    hardware.add_argument("--device", default="auto", help=DEVICE_HELP)
    output.add_argument("--json", action="store_true", help="also write {stem1}_vs_{stem2}_data.json")
    add_config_arguments(parser, INFER_OPTIONS)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, config = parse_config(parser, argv)
    batch = args.pairs is not None or args.folder is not None
    if batch and len(args.paths) != 1:
        parser.error("with --pairs or --folder give exactly one positional argument: OUT_DIR")
    if not batch and len(args.paths) != 3:
        parser.error("give IMG1 IMG2 OUT_DIR (or OUT_DIR with --pairs / --folder)")
    _check_folder_options(parser, args)
    if args.columns is not None and args.pairs is None:
        parser.error("--columns maps the columns of the --pairs CSV; give --pairs or drop --columns")
    if missing := _missing_input(args, batch):  # before importing torch: an instant answer
        return _fail(missing, EXIT_INPUT)
    from face_match_age.device import (
        DeviceUnavailableError,
        batch_process_count,
        resolve_device,
        resolve_inference_precision,
    )

    try:
        # Resolved once here: a usage error before any model loads, and what config.json and batch.json record.
        config = config.replace(
            inference_precision=resolve_inference_precision(config.inference_precision, resolve_device(args.device))
        )
        processes = batch_process_count(config.devices, args.device) if batch else 1
    except DeviceUnavailableError as error:  # a real option this machine cannot honour: one line, no usage text
        return _fail(error, EXIT_USAGE)
    except ValueError as error:
        parser.error(str(error))
    age_model = age_model_status(args, config)
    if not age_model["loaded"] and not args.no_age:
        print(f"note: {age_model['reason']}; add --no-age to skip this note", file=sys.stderr)
    # SIGTERM, to this process alone or to its whole group, takes the path of Ctrl-C below.
    with StopSignals() as stop:
        return _run_mode(args, config, batch, processes, age_model, stop)


def _missing_input(args, batch: bool) -> str | None:
    """What a missing photo or pairs file would make load_image or read_pairs_csv say, checked without them."""
    if args.pairs is not None and not args.pairs.is_file():
        return f"pairs file {args.pairs} does not exist; check the path"
    for path in () if batch else map(Path, args.paths[:2]):
        if not path.exists():
            return f"cannot read image {path}: no such file"
        if path.is_dir():
            return f"cannot read image {path}: it is a folder, not a file"
    return None


def _run_mode(args, config: Config, batch: bool, processes: int, age_model: dict, stop: StopSignals) -> int:
    import torch

    from face_match_age.detection.faces import NoFaceError
    from face_match_age.detection.imaging import ImageLoadError
    from face_match_age.files.embedding_store import StoreError
    from face_match_age.files.photo_lists import PhotoListError
    from face_match_age.inference.batch import BatchInterrupted, InputError
    from face_match_age.inference.folder_embedding import FolderInterrupted
    from face_match_age.inference.folder_run import FolderInputError
    from face_match_age.match_rule import CalibrationError, MatchRule
    from face_match_age.network.age_network import CheckpointError
    from face_match_age.network.weights import PretrainedWeightsError

    try:
        if args.calibration:
            rule = MatchRule.from_calibration(args.calibration)
        else:
            rule = MatchRule(config.verification_threshold)
        if args.folder is not None:
            return run_folder_command(args, config, rule, processes, age_model)
        if batch:
            return run_batches(args, config, rule, processes, age_model)
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
        return _fail(out_of_memory_message(error, "running the networks", lower), EXIT_MODEL)
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
        print(f"{stop.what}: rerun the same command to " + ("resume" if batch else "compare the pair"), file=sys.stderr)
        return stop.exit_code
    except OSError as error:  # a full disk met outside the result files (the embedding store, a sheet)
        if not is_disk_full(error):
            raise
        return _fail(disk_full_message(error.filename or args.paths[-1], "another OUT_DIR"), EXIT_OUTPUT)


def _check_folder_options(parser, args) -> None:
    folder_only = ("reference", "files", "merge_from", "top_k", "embed_only")
    if args.folder is None:
        for name in folder_only:
            if getattr(args, name) not in (None, False):
                parser.error(f"--{name.replace('_', '-')} needs --folder")
        return
    if args.all_faces:
        parser.error("--all-faces works in pair mode and with --pairs; --folder keeps each photo's chosen face")
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
    named = "best_checkpoint" in vars(args) or config.best_checkpoint != Config().best_checkpoint
    if named or Path(config.best_checkpoint).exists():
        return {"loaded": True, "reason": None}
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
    from face_match_age.inference.analyzer import verification_weights_identity
    from face_match_age.inference.batch import file_stamp

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
        device=args.device,
    )
    noun = ("row", "rows") if args.top_k else ("match", "matches")
    found = "embedded" if args.embed_only else f"{outcome.matches} {noun[outcome.matches != 1]}"
    failed = f" ({outcome.failed} without a face or unreadable)" if outcome.failed else ""
    photos = f"{outcome.photos} photo{'' if outcome.photos == 1 else 's'}"
    print(f"{photos}{failed}: {found} -> {', '.join(str(p) for p in outcome.written)}")
    return EXIT_PAIRS_FAILED if outcome.failed else EXIT_OK


def run_batches(args, config: Config, rule: MatchRule, processes: int, age_model: dict) -> int:
    from face_match_age.inference.batch import read_pairs_csv, run_batch

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
        device=args.device,
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
    analyzer = analyzer_factory(args, config, age_model)(device=args.device)
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
    from face_match_age.inference.analyzer import pair_row
    from face_match_age.inference.annotate import comparison_image
    from face_match_age.match_rule import MatchRule

    analysis_start = time.perf_counter()
    first, second = analyzer.analyze_many(photos, all_faces=all_faces, names=[str(p) for p in paths])
    rule = MatchRule(analyzer.config.verification_threshold) if rule is None else rule
    if age_model is None:
        loaded = analyzer.age_model is not None
        age_model = {"loaded": loaded, "reason": None if loaded else "the FaceAnalyzer was built with with_age=False"}
    result = pair_json(paths, pair_row(*paths, first, second, rule, age_model), analyzer)
    result["timings_ms"] = {**(timings or {}), "analyze": _ms(time.perf_counter() - analysis_start)}
    stem = unique_stem(out_dir, f"{paths[0].stem}_vs_{paths[1].stem}", [str(p.resolve()) for p in paths])
    image_path = out_dir / f"{stem}_result.jpg"
    sources = json.dumps([str(p.resolve()) for p in paths]).encode()
    write_atomically(
        image_path, lambda tmp: comparison_image(*photos, result).save(tmp, format="JPEG", quality=92, comment=sources)
    )
    written = [image_path]
    if write_json_file:
        result["timings_ms"]["total"] = _ms(time.perf_counter() - (started or analysis_start))
        written.append(write_json(out_dir / f"{stem}_data.json", result))
    return result, written


def pair_json(paths: list[Path], row: dict, analyzer: FaceAnalyzer) -> dict:
    """The pair's row (analyzer.pair_row: the seed's JSON layout), then what pair mode adds."""
    return {
        **row,
        "path_1": str(paths[0]),
        "path_2": str(paths[1]),
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
    ages = [result[key].get("age_prediction") for key in ("face_1", "face_2")]
    age_text = "" if None in ages else f"; ages {ages[0]:.0f} and {ages[1]:.0f}"
    return (
        f"{verdict}: similarity {verification['similarity_score']:.4f} vs threshold "
        f"{_figure(verification['threshold_used'])}{age_text}"
    )


def _figure(value) -> str:
    """A number at 4 decimals at most (a calibrated threshold has many), trailing zeros dropped."""
    return f"{value:.4f}".rstrip("0").rstrip(".") if isinstance(value, float) else str(value)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def _fail(error: Exception, code: int) -> int:
    print_error(error)
    return code
