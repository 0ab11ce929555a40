"""Download, verify, unpack, filter, crop and split a public face-age dataset for train.py.

Writes <out>/train_images/, <out>/val_images/, <out>/train.csv and <out>/val.csv (columns name, age,
identity, source), <out>/summary.json and <out>/config.json: train.py --data-dir <out> reads them. A second
run with the same arguments does nothing; an interrupted one continues where it stopped.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from config import (
    DATASET_SOURCES,
    Config,
    ConfigArgumentParser,
    add_config_arguments,
    dataset_paths,
    help_epilog,
    parse_config,
    save_config,
    settings_that_change,
)
from face_match_age.error_messages import out_of_memory_message, print_error
from face_match_age.exit_codes import ExitCode
from face_match_age.files.column_mapping import LABEL_COLUMNS, add_columns_option
from face_match_age.files.downloader import DownloadError, NotEnoughSpace, download
from face_match_age.files.output_files import OutputError, write_atomically, write_json
from face_match_age.preparation.archives import ArchiveError, unpack, verify_checksum
from face_match_age.preparation.dataset_labels import Labels, MetadataError, output_name, read_labels
from face_match_age.preparation.splits import (
    SplitError,
    people_of,
    shared_identities,
    split_records,
    split_shortfall,
    within_tolerance,
)
from face_match_age.processes import StopSignals
from face_match_age.reports.crop_preview import save_split_previews

DATASETS = (*DATASET_SOURCES, "csv")
PREP_OPTIONS = (
    "val_ratio",
    "img_size",
    "seed",
    "data_root",
    "min_face_score",
    "min_image_side",
    "mtcnn_margin",
    "face_selection",
    "device",
)
CSV_COLUMNS = ["name", "age", "identity", "source"]


EXIT_INTERRUPTED = ExitCode.INTERRUPTED  # the shell's code for a command ended by Ctrl-C (128 + SIGINT)
EXIT_TERMINATED = ExitCode.TERMINATED  # the same for SIGTERM (128 + 15): a scheduler's stop, which takes Ctrl-C's path
EXAMPLES = (
    "uv run python data_prep.py                                  # IMDB (IMDB-WIKI, filtered) into data/IMDB",
    "uv run python data_prep.py --dataset utkface --archive ~/Downloads/UTKFace.tar.gz",
    "uv run python data_prep.py --dataset csv --images my_photos/ --csv my_labels.csv --out data/MINE",
    "uv run python data_prep.py --limit 2000                     # a quick subset",
)
EXIT_CODES = {
    ExitCode.OK: "done (or already done with these arguments)",
    ExitCode.INPUT: "something to fix in the input (the message says what): a download, checksum, archive, labels "
    "or split problem",
    ExitCode.OUTPUT: "a crop or table cannot be written (a full disk too); the work so far is kept",
    ExitCode.OUT_OF_MEMORY: "the GPU ran out of memory while detecting faces",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C); what was kept is named, and the same command continues",
    EXIT_TERMINATED: "stopped by SIGTERM (a scheduler's stop); kept and continued as for 130",
}


class PrepError(RuntimeError):
    """Something the user must fix before the dataset can be prepared."""


class Interrupted(Exception):
    """Ctrl-C, with what was kept: the one line main() prints."""


def build_parser() -> ConfigArgumentParser:
    parser = ConfigArgumentParser(description=__doc__, epilog=help_epilog(EXAMPLES, EXIT_CODES))
    data = parser.group("data")
    data.add_argument("--dataset", choices=DATASETS, default="imdb", help="which dataset")
    data.add_argument("--url", help="download the archive from this mirror instead")
    data.add_argument("--archive", type=Path, help="use this archive file already on disk")
    data.add_argument("--skip-checksum", action="store_true", help="accept an archive whose MD5 differs")
    data.add_argument("--limit", type=int, help="prepare at most this many photos (a seeded random subset)")
    data.add_argument("--images", type=Path, help="--dataset csv: the folder of photos")
    data.add_argument("--csv", type=Path, help="--dataset csv: labels with columns name, age (identity optional)")
    add_columns_option(data, LABEL_COLUMNS, "--csv labels", "name=file,age=years")
    parser.group("detection").add_argument(
        "--no-detect", action="store_true", help="resize the dataset's own crops instead of cropping with MTCNN"
    )
    parser.group("hardware").add_argument(
        "--workers",
        type=int,
        default=Config().num_workers,
        help="processes cropping faces; with 2 or more, faces are detected on the CPU whatever --device says",
    )
    parser.group("output").add_argument(
        "--out", type=Path, help="output folder (default: DATA_ROOT/<dataset's folder>, e.g. data/IMDB)"
    )
    add_config_arguments(parser, PREP_OPTIONS)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, config = parse_config(parser, argv)
    if args.dataset == "csv" and (args.images is None or args.csv is None):
        parser.error("--dataset csv needs --images DIR and --csv FILE")
    if args.columns is not None and args.dataset != "csv":
        parser.error("--columns maps the columns of --dataset csv's --csv file; drop it for another dataset")
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    if args.csv is not None and not args.csv.is_file():  # before importing torch (MTCNN): an instant answer
        print_error(f"labels file {args.csv} does not exist; check the path")
        return ExitCode.INPUT
    import torch

    from face_match_age.device import DeviceUnavailableError, choose_device

    stop = StopSignals()  # SIGTERM, to this process alone or to its whole group, takes Ctrl-C's path
    try:
        if not args.no_detect:  # a --device this machine lacks is said before any download or cropping
            choose_device(config.device)
        with stop:
            prepare(args, config)
    except NotEnoughSpace as error:  # a download that would fill the disk
        print_error(error)
        return ExitCode.OUTPUT
    except (PrepError, DownloadError, ArchiveError, MetadataError) as error:
        print_error(error)
        return ExitCode.INPUT
    except DeviceUnavailableError as error:  # a --device this machine lacks: one line
        print_error(error)
        return ExitCode.USAGE
    except OutputError as error:  # a crop or table that cannot be written: the work so far is kept
        print_error(f"{error}; fix that and run the same command again: it continues where it stopped")
        return ExitCode.OUTPUT
    except OSError as error:  # a full disk or a folder without write permission, while cropping or writing
        print_error(
            f"{error.strerror or error} ({error.filename or 'while preparing'}); fix that and run the same "
            "command again: it continues where it stopped"
        )
        return ExitCode.OUTPUT
    except Interrupted as stopped:
        print(f"{stop.what}: {stopped}", file=sys.stderr)
        return stop.exit_code
    except torch.OutOfMemoryError as error:  # MTCNN on the GPU (one process); worker processes detect on the CPU
        print_error(
            out_of_memory_message(error, "detecting faces", "free the GPU, or detect on the CPU with --workers 2")
        )
        return ExitCode.OUT_OF_MEMORY
    return ExitCode.OK


def prepare(args, config: Config) -> dict:
    """The whole pipeline; returns the summary written to <out>/summary.json."""
    out_dir = args.out or config.data_root / (
        DATASET_SOURCES[args.dataset].out_name if args.dataset != "csv" else "CUSTOM"
    )
    fingerprint = _fingerprint(args, config)
    summary_path = out_dir / "summary.json"
    if _already_done(summary_path, fingerprint, out_dir):
        print(f"{out_dir} is already prepared with these arguments (see {summary_path}); nothing to do.")
        save_split_previews(out_dir, config.seed)  # only when missing or stale, e.g. prepared by an older version
        return json.loads(summary_path.read_text())
    started = time.perf_counter()
    # A download in progress says what it kept itself; an unpacking is redone whole (its marker comes last).
    with _on_ctrl_c("before any photo was cropped; run the same command again (a download resumes)"):
        root = obtain_photos(args, config)
        labels = read_labels(args.dataset, root, config.min_face_score, args.csv, args.columns)
        train, val = _split(labels, args, config)
    kept, dropped = crop_all(train, val, root, out_dir, args, config)
    _refuse_an_emptied_split(train, val, kept, dropped, out_dir)
    _warn_if_drops_moved_the_split(train, val, kept, config.val_ratio)
    with _on_ctrl_c(f"every photo is cropped in {out_dir}; run the same command again to write the CSVs"):
        summary = _summary(args, labels, train, val, kept, dropped, fingerprint, time.perf_counter() - started)
        _write_split_csvs(out_dir, train, val, kept)
        save_config(  # with the paths of what it wrote: `train.py --config OUT/config.json` trains on it
            config.replace(dataset_dir=out_dir, **dataset_paths(out_dir)),
            out_dir,
            extra={
                "script": "data_prep.py",
                "dataset": args.dataset,
                "limit": args.limit,
                "detect": not args.no_detect,
            },
        )
        write_json(summary_path, summary)  # last: its presence marks the preparation as complete
        previews = save_split_previews(out_dir, config.seed)  # after: a rerun finds it done and draws them
    print_summary(summary, out_dir)
    print(f"  a sample of the crops, to check before training: {', '.join(map(str, previews))}")
    return summary


def obtain_photos(args, config: Config) -> Path:
    """The folder holding the dataset's photos: downloaded, checked and unpacked when needed."""
    if args.dataset == "csv":
        if not args.images.is_dir():
            raise PrepError(f"--images {args.images} is not a folder")
        return args.images
    source = DATASET_SOURCES[args.dataset]
    archive = args.archive or _download(args, config, source)
    if not archive.is_file():
        raise PrepError(f"--archive {archive} is not a file")
    if not args.skip_checksum and not verify_checksum(archive, source.md5):
        raise PrepError(
            f"{archive} does not have the expected MD5 {source.md5}: it may be incomplete or a "
            "different version. It was kept; delete it to download again, or pass --skip-checksum "
            "to use it anyway"
        )
    unpacked = unpack(archive, config.data_root / "raw" / source.out_name)
    root = unpacked / source.inner
    if not root.is_dir():
        raise PrepError(
            f"{archive} does not contain {source.inner}/: is it the right archive for --dataset {args.dataset}?"
        )
    return root


@contextlib.contextmanager
def _on_ctrl_c(kept: str):
    """Turn Ctrl-C inside the block into Interrupted("<kept>"), for one line instead of a traceback."""
    try:
        yield
    except KeyboardInterrupt:
        raise Interrupted(kept) from None


def _download(args, config: Config, source) -> Path:
    url = args.url or source.url
    if url is None:
        raise PrepError(
            f"{source.file_name} has no stable direct download: get it from {source.page} "
            f"and pass --archive PATH (or --url MIRROR)"
        )
    dest = config.data_root / "downloads" / source.file_name
    try:
        with _on_ctrl_c(f"the part downloaded so far is kept in {dest}.part; run the same command again to resume"):
            return download(url, dest)
    except NotEnoughSpace:
        raise  # its message already says what to do
    except DownloadError as error:
        raise PrepError(
            f"{error}. Check the network and run again (the download resumes), or download "
            f"{source.file_name} from {source.page} elsewhere and pass --archive PATH"
        ) from None


def _split(labels: Labels, args, config: Config) -> tuple[pd.DataFrame, pd.DataFrame]:
    records = labels.frame()
    if records.empty:
        raise PrepError("no usable photo is left after filtering; see the counts above and check the archive")
    if args.limit is not None and args.limit < len(records):
        records = records.sample(n=args.limit, random_state=config.seed).sort_values("source")
    if not labels.has_identity:
        print(
            f"note: {args.dataset} has no identity labels, so the split is random (stratified by age) and the "
            "same person may appear in both train and val: validation figures will be optimistic."
        )
    try:
        train, val = split_records(records.reset_index(drop=True), config.val_ratio, config.seed, labels.has_identity)
    except SplitError as error:
        limited = f" (--limit {args.limit} kept {len(records)}; raise it)" if args.limit is not None else ""
        raise PrepError(f"{args.csv or args.dataset}: {error}{limited}; nothing was written") from None
    shared = shared_identities(train, val) if labels.has_identity else []
    if shared:  # a bug guard: the split is built to avoid this, and writing a leaky split would be worse
        raise PrepError(f"{len(shared)} people are in both train and val (e.g. {shared[:3]}); nothing was written")
    if labels.has_identity and (anonymous := int(records["identity"].isna().sum())):
        print(f"note: photos without an identity: {anonymous}; each counts as a person of its own in the split")
    if shortfall := split_shortfall(train, val, config.val_ratio):
        print(f"warning: {shortfall}", file=sys.stderr)
    return train, val


def _refuse_an_emptied_split(train: pd.DataFrame, val: pd.DataFrame, kept: set[str], dropped: Counter, out_dir: Path):
    """Cropping that drops every photo of one side would leave an empty train.csv or val.csv: train.py could
    not train, or would validate on nothing. The crops made are kept for a rerun."""
    for split, rows in (("train", train), ("val", val)):
        if not rows["source"].isin(kept).any():
            why = ", ".join(f"{reason}: {count}" for reason, count in dropped.items())
            raise PrepError(
                f"{out_dir}: none of the {len(rows)} {split} photos kept a face (dropped in both splits: {why}), so "
                f"{split}.csv would be empty and was not written; add photos, or lower --min-face-score, and run again"
            )


def _warn_if_drops_moved_the_split(train: pd.DataFrame, val: pd.DataFrame, kept: set[str], val_ratio: float) -> None:
    # The split is drawn before cropping (the crops are written into their split's folder), so photos where no face
    # is found can still move the shares; a split that already missed the ratio was warned about when drawn.
    val_kept, total_kept = int(val["source"].isin(kept).sum()), len(kept)
    if total_kept == 0 or split_shortfall(train, val, val_ratio) or within_tolerance(val_kept, total_kept, val_ratio):
        return
    print(
        f"warning: after cropping, val holds {val_kept} of the {total_kept} images kept ({val_kept / total_kept:.0%}), "
        f"not the {val_ratio:.0%} asked: the photos dropped while cropping (counted below) came unevenly from "
        "train and val",
        file=sys.stderr,
    )


def crop_all(
    train: pd.DataFrame, val: pd.DataFrame, root: Path, out_dir: Path, args, config: Config
) -> tuple[set[str], Counter]:
    """Crop every photo not yet done; returns the sources kept and the drop counts (this run and earlier ones)."""
    from face_match_age.device import choose_device
    from face_match_age.preparation.crops import KEPT, CropLog, CropTask, run_crops

    tasks: dict[CropTask, str] = {}  # task -> the dataset's own name of its photo
    for split, rows in (("train", train), ("val", val)):
        folder = out_dir / f"{split}_images"
        folder.mkdir(parents=True, exist_ok=True)
        tasks |= {CropTask(str(root / s), str(folder / output_name(s))): s for s in rows["source"]}
    log = CropLog(out_dir / "crop_log.jsonl")
    pending = log.pending(tasks)
    if len(pending) < len(tasks):
        print(
            f"resuming: {len(tasks) - len(pending)} of {len(tasks)} photos were done by an earlier run "
            "(photos that failed are tried again when their file has changed)"
        )
    detect = not args.no_detect
    # crop worker processes (--workers 2 or more) detect on the CPU; main() has checked --device
    device = str(choose_device(config.device).device) if detect and args.workers <= 1 else "cpu"
    done = len(tasks) - len(pending)
    try:
        # closing(): on Ctrl-C the generator ends here, and with it the worker pool, before the message
        with (
            log.appending() as handle,
            contextlib.closing(run_crops(pending, config, detect, args.workers, device)) as outcomes,
        ):
            for task, outcome in tqdm(
                outcomes, total=len(pending), desc="cropping faces" if detect else "resizing", unit="photo"
            ):
                done += 1  # first: the crop file (if any) is written, so it counts as done even if the log line is not
                log.record(handle, task, outcome)
    except KeyboardInterrupt:
        raise Interrupted(
            f"{done} of {len(tasks)} photos are done and kept in {out_dir} (logged in {log.path}); "
            "run the same command again to continue from there"
        ) from None
    outcome_of = {source: log.outcome(task) for task, source in tasks.items()}
    kept = {source for source, outcome in outcome_of.items() if outcome == KEPT}
    return kept, Counter(outcome for outcome in outcome_of.values() if outcome != KEPT)


def _write_split_csvs(out_dir: Path, train: pd.DataFrame, val: pd.DataFrame, kept: set[str]) -> None:
    for split, rows in (("train", train), ("val", val)):
        table = rows[rows["source"].isin(kept)].assign(name=lambda r: r["source"].map(output_name))[CSV_COLUMNS]
        write_atomically(out_dir / f"{split}.csv", functools.partial(table.to_csv, index=False))


def _summary(
    args, labels: Labels, train, val, kept: set[str], crop_drops: Counter, fingerprint: dict, seconds: float
) -> dict:
    counts = {split: int(rows["source"].isin(kept).sum()) for split, rows in (("train", train), ("val", val))}
    people = {
        split: int(people_of(rows.loc[rows["source"].isin(kept)]).nunique())  # a row without identity: one
        for split, rows in (("train", train), ("val", val))
    }
    return {
        "dataset": args.dataset,
        "fingerprint": fingerprint,
        "records_usable": len(labels.rows),
        "dropped_by_metadata": dict(labels.dropped),
        "dropped_by_cropping": dict(crop_drops),
        "train_images": counts["train"],
        "val_images": counts["val"],
        "train_identities": people["train"] if labels.has_identity else None,
        "val_identities": people["val"] if labels.has_identity else None,
        "identity_disjoint": labels.has_identity,
        "seconds": round(seconds, 1),
    }


def print_summary(summary: dict, out_dir: Path) -> None:
    rows = [("usable records in the metadata", summary["records_usable"])]
    rows += [(f"dropped: {reason}", count) for reason, count in summary["dropped_by_metadata"].items()]
    rows += [(f"dropped while cropping: {reason}", count) for reason, count in summary["dropped_by_cropping"].items()]
    rows += [("train images", summary["train_images"]), ("val images", summary["val_images"])]
    if summary["identity_disjoint"]:
        rows += [("people in train / val", f"{summary['train_identities']} / {summary['val_identities']}")]
    width = max(len(label) for label, _ in rows)
    print(f"\n{summary['dataset']} prepared in {out_dir}:")
    for label, value in rows:
        print(f"  {label:<{width}}  {value:>8}")


def _fingerprint(args, config: Config) -> dict:
    """What decides the output: a second run with the same fingerprint has nothing to do. The settings in it are
    those the config fields declare to change the crops (settings_that_change("crops"))."""
    archive = args.archive or args.images
    return {
        "dataset": args.dataset,
        "limit": args.limit,
        **{name: config.to_dict()[name] for name in settings_that_change("crops")},
        "detect": not args.no_detect,
        "source": str(archive or args.url or "default"),
        "csv": hashlib.md5(args.csv.read_bytes(), usedforsecurity=False).hexdigest()
        if args.csv and args.csv.is_file()
        else None,
    }


def _already_done(summary_path: Path, fingerprint: dict, out_dir: Path) -> bool:
    from face_match_age.preparation.crops import CropLog

    if not summary_path.is_file() or not (out_dir / "train.csv").is_file() or not (out_dir / "val.csv").is_file():
        return False
    try:
        same = json.loads(summary_path.read_text()).get("fingerprint") == fingerprint
    except json.JSONDecodeError:
        return False
    retry = CropLog(out_dir / "crop_log.jsonl").changed_failures() if same else 0
    if retry:
        print(f"photos that failed before and have changed since: {retry}; trying them again")
    return same and not retry


if __name__ == "__main__":
    sys.exit(main())
