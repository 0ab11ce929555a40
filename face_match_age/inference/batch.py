"""infer.py --pairs: many pairs from a CSV, streamed to results.jsonl and results.csv.

Each distinct photo is read, detected and embedded once, in input order, with the faces of several
photos sharing forward passes. A pair's row is written as soon as both its photos are done; when the
batch ends, both files are put in the order of the pairs. With --devices N the photos are sharded over
N processes (one per GPU, or CPU processes), each with its own copy of the models; the main process
only pairs up and writes the results.

Results are never written over. OUT_DIR/batch.json records what makes a batch (its pairs and every
setting that changes a row): the same batch run again into the same folder skips the pairs already in
results.jsonl and ends with the files an uninterrupted run writes; another batch is refused.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import sys
from collections import Counter
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

from tqdm import tqdm

from face_match_age.error_messages import error_line
from face_match_age.files.model_stamps import file_stamp, model_files
from face_match_age.files.output_files import (
    OutputError,
    is_disk_full,
    out_dir_lock,
    prepare_out_dir,
    recorded_differences,
    write_atomically,
    write_json,
)
from face_match_age.inference.analyzer import FaceAnalyzer, PhotoAnalysis, pair_result
from face_match_age.inference.pair_specs import FAILED, MATCH, NO_MATCH, PairSpec, verdict
from face_match_age.inference.records import (
    RESULTS_CSV_COLUMNS,
    RESULTS_JSONL_AFTER,
    RESULTS_JSONL_BEFORE,
    SCHEMA_VERSION,
    pair_from_json,
    table_row,
)
from face_match_age.inference.sharded_analysis import analyses_sharded
from face_match_age.match_rule import MatchRule
from face_match_age.reports.batch_sheet import save_batch_sheet
from face_match_age.settings import Config, save_config, settings_that_change

RESULTS_JSONL, RESULTS_CSV, MANIFEST = "results.jsonl", "results.csv", "batch.json"
# The Config fields that change a row are those declared to change faces or verdicts (settings.py: changes=);
# the others (batch sizes, workers...) change only how fast rows come.
ROW_RESULTS = ("faces", "verdicts")


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C during a batch, after its results files were made consistent: `rows` complete rows are in
    `results` (and in results.csv), and the same command resumes from them."""

    def __init__(self, results: Path, rows: int) -> None:
        super().__init__(f"{rows} rows kept in {results}")
        self.results, self.rows = results, rows


def run_batch(
    pairs: list[PairSpec],
    out_dir: Path,
    make_analyzer: Callable[..., FaceAnalyzer],
    rule: MatchRule,
    *,
    config: Config,
    devices: int = 1,
    device: str = "auto",
    all_faces: bool = False,
    record: dict | None = None,
    settings: dict | None = None,
    age_model: dict | None = None,
) -> dict[str, int]:
    """Compare every pair, streaming rows to out_dir; returns the count of each verdict (match, no match, failed).

    make_analyzer(device=...) builds the models (picklable when devices > 1, e.g. a functools.partial of
    FaceAnalyzer); rule: when a pair matches (a fixed or calibrated threshold); record goes into out_dir/config.json;
    settings: what else changes a row (e.g. tta, the weights used), recorded in out_dir/batch.json.
    age_model: what every row says about the age model (the rows' `age_model` field).
    A rerun of the same batch resumes; an out_dir holding another batch's rows raises OutputError; Ctrl-C
    raises BatchInterrupted with every row written so far kept; another run writing into out_dir (holding its
    lock) raises OutputError."""
    out_dir = prepare_out_dir(out_dir)
    with out_dir_lock(out_dir):  # held until the files are final: two batches would replace each other's rows
        identity = batch_identity(pairs, config, rule, all_faces, settings)
        _refuse_another_batch(out_dir, identity)
        results = out_dir / RESULTS_JSONL
        try:
            kept = _read_rows(results)
            _write_rows(out_dir, list(kept.values()))  # a row cut short by a kill is gone, and results.csv matches
            write_json(out_dir / MANIFEST, identity)
            save_config(config, out_dir, extra={"script": "infer.py", **(record or {})})
            todo = [pair for pair in pairs if pair.index not in kept]
            if kept:
                print(f"resuming: {len(pairs) - len(todo)} of {len(pairs)} pairs already in {results}")
            photos = list(dict.fromkeys(path for pair in todo for path in (pair.path1, pair.path2)))
            if not photos:
                analyses = _no_analyses()  # nothing left to do: no model is loaded
            elif devices > 1:
                analyses = analyses_sharded(devices, device, all_faces, make_analyzer, photos)
            else:
                analyses = make_analyzer(device=device).analyze_many(
                    photos, all_faces=all_faces, names=[str(p) for p in photos]
                )
            whole = _WholeRows(out_dir, rows=len(kept))
            with contextlib.closing(analyses), whole:  # on Ctrl-C too, worker processes are stopped here
                _write_results(
                    todo, analyses, out_dir, rule, already=len(pairs) - len(todo), age_model=age_model, whole=whole
                )
            # Rows arrive in the order photos finish, which a resumed or sharded run changes: the pairs' order
            # makes the finished files the same however the batch got there.
            done = _read_rows(results)
            _write_rows(out_dir, [done[index] for index in sorted(done)])
        except KeyboardInterrupt:
            kept = _read_rows(results)
            _write_rows(out_dir, list(kept.values()))  # results.csv may lack the row being written at Ctrl-C
            raise BatchInterrupted(results, len(kept)) from None
        counts = Counter(verdict(json.loads(line)) for line in done.values())
        print(
            f"{len(pairs)} pairs: {counts[MATCH]} match, {counts[NO_MATCH]} no match, {counts[FAILED]} failed "
            f"-> {results}, {out_dir / RESULTS_CSV}"
        )
        print(f"contact sheet of the pairs -> {save_batch_sheet(results, pairs)}")
        return counts


def batch_identity(
    pairs: list[PairSpec], config: Config, rule: MatchRule, all_faces: bool, settings: dict | None = None
) -> dict:
    """What makes two runs the same batch, as JSON-ready data: the pairs and every setting that changes a row."""
    listed = [[p.index, str(p.path1), str(p.path2), p.img1, p.img2, p.label] for p in pairs]
    digest = hashlib.sha256(json.dumps(listed, ensure_ascii=False, default=str).encode()).hexdigest()
    identity = {
        "schema": SCHEMA_VERSION,
        "pairs": len(pairs),
        "pairs_sha256": digest,
        "threshold": rule.describe(),
        "all_faces": all_faces,
        # inference_precision as the script resolved it for the device: auto on a GPU is not auto on a CPU
        **{name: config.to_dict()[name] for name in settings_that_change(*ROW_RESULTS)},
        "age_checkpoint": file_stamp(config.best_checkpoint),
        **(settings or {}),
    }
    return json.loads(json.dumps(identity, default=str))  # as batch.json will read back


def _refuse_another_batch(out_dir: Path, identity: dict) -> None:
    jsonl, table = out_dir / RESULTS_JSONL, out_dir / RESULTS_CSV
    holds_rows = (jsonl.is_file() and jsonl.stat().st_size > 0) or (
        table.is_file() and len(table.read_bytes().splitlines()) > 1
    )  # more than a header
    if not holds_rows:
        return
    differ = recorded_differences(out_dir / MANIFEST, identity)
    if differ == []:
        return
    if differ is not None and "schema" in differ:
        raise OutputError(
            f"{out_dir} holds results written by an older version, whose fields have other names (results "
            f"schema {_recorded_schema(out_dir / MANIFEST)}, this version writes {SCHEMA_VERSION}); choose a new "
            f"OUT_DIR, or delete {jsonl} and {table} to start again"
        )
    if differ is None:
        why = f"no readable {MANIFEST} says which"
    else:
        why = f"its {', '.join(differ)} differ from this command's"
        why += "".join(f"; {name} is not the file its rows were made with" for name in model_files(differ, identity))
    raise OutputError(
        f"{out_dir} holds the results of another batch ({why}); choose another OUT_DIR, "
        f"or delete {jsonl} and {table} to start again"
    )


def _recorded_schema(manifest: Path) -> int:
    """The results schema a batch.json records (1: written before it recorded one)."""
    try:
        return json.loads(manifest.read_text(encoding="utf-8")).get("schema", 1)
    except (OSError, ValueError, AttributeError):
        return 1


def _read_rows(jsonl: Path) -> dict[int, str]:
    """pair_index -> line of each row of results.jsonl, in file order (a pair's first row wins). A last
    line cut short (the process was killed mid-write) is dropped, and so is any line that is not a row."""
    try:
        text = jsonl.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return {}
    rows: dict[int, str] = {}
    for line in text[: text.rfind("\n") + 1].split("\n")[:-1]:  # not splitlines(): rows may hold U+2028
        try:
            index = json.loads(line).get("pair_index")
        except (ValueError, AttributeError):
            continue
        if isinstance(index, int):
            rows.setdefault(index, line)
    return rows


def _write_rows(out_dir: Path, lines: list[str]) -> None:
    """Replace results.jsonl with `lines` and results.csv with the same rows, each file atomically."""
    table = io.StringIO(newline="")
    writer = csv.writer(table)
    writer.writerow(RESULTS_CSV_COLUMNS)
    writer.writerows(_csv_row(json.loads(line)) for line in lines)
    write_atomically(
        out_dir / RESULTS_JSONL, lambda tmp: tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    )
    write_atomically(out_dir / RESULTS_CSV, lambda tmp: tmp.write_text(table.getvalue(), encoding="utf-8", newline=""))


class _WholeRows:
    """Where the whole rows of results.jsonl and results.csv end, as the appending writer reports them; a
    full disk met within its `with` cuts both files back there and becomes an OutputError that says so."""

    def __init__(self, out_dir: Path, rows: int) -> None:
        self.out_dir, self.files = out_dir, (out_dir / RESULTS_JSONL, out_dir / RESULTS_CSV)
        self.sizes, self.rows = [path.stat().st_size for path in self.files], rows

    def add(self, jsonl, table) -> None:
        """A row was written whole to both (flushed) files."""
        self.sizes, self.rows = [os.fstat(file.fileno()).st_size for file in (jsonl, table)], self.rows + 1

    def __enter__(self) -> _WholeRows:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if error is None or not is_disk_full(error):
            return
        for path, size in zip(self.files, self.sizes):
            os.truncate(path, size)  # frees space rather than needing it, so it works on a full disk
        kept = f"{self.rows} whole row{' is' if self.rows == 1 else 's are'}"
        raise OutputError(
            f"disk full writing the results in {self.out_dir}; {kept} kept: free space and run the same command "
            "to resume, or choose another OUT_DIR"
        ) from None


def _no_analyses() -> Generator[PhotoAnalysis, None, None]:
    yield from ()


def _write_results(
    pairs: list[PairSpec],
    analyses: Iterator[PhotoAnalysis],
    out_dir: Path,
    rule: MatchRule,
    already: int = 0,
    age_model: dict | None = None,
    whole: _WholeRows | None = None,
) -> None:
    """Append the rows of `pairs` to both results files, each as soon as both its photos are done; `whole`
    learns where each whole row ends."""
    waiting: dict[str, list[int]] = {}
    for index, pair in enumerate(pairs):
        for path in {str(pair.path1), str(pair.path2)}:
            waiting.setdefault(path, []).append(index)
    done: dict[str, PhotoAnalysis] = {}
    # disable=None: no progress bar when stderr is not a terminal (a log file), only the error lines
    with (
        open(out_dir / RESULTS_JSONL, "a", encoding="utf-8") as jsonl,
        open(out_dir / RESULTS_CSV, "a", newline="", encoding="utf-8") as table,
        tqdm(total=already + len(pairs), initial=already, unit="pair", desc="pairs", disable=None) as progress,
    ):
        writer = csv.writer(table)
        for analysis in analyses:
            done[analysis.source] = analysis
            if analysis.error:  # one line per failed photo, above the progress bar; its rows say it too
                tqdm.write(error_line(analysis.error), file=sys.stderr)
            for index in waiting.pop(analysis.source, []):
                pair = pairs[index]
                if str(pair.path1) not in done or str(pair.path2) not in done:
                    continue  # the other photo is still on its way; its arrival writes this row
                row = _row(pair, done[str(pair.path1)], done[str(pair.path2)], rule, age_model)
                jsonl.write(json.dumps(row, ensure_ascii=False) + "\n")
                writer.writerow(_csv_row(row))
                jsonl.flush()  # a crash keeps every row written so far
                table.flush()
                if whole is not None:
                    whole.add(jsonl, table)
                progress.update()


def _row(pair: PairSpec, first: PhotoAnalysis, second: PhotoAnalysis, rule: MatchRule, age_model: dict | None) -> dict:
    """A line of results.jsonl: the pair's place and label, its records.PairResult, then what the run adds."""
    result = pair_result(first, second, rule, files=(pair.img1, pair.img2))
    row = dict(zip(RESULTS_JSONL_BEFORE, (pair.index, pair.label))) | result.to_json()
    return row | dict(zip(RESULTS_JSONL_AFTER, (age_model, [first.worker_rank, second.worker_rank])))


def _csv_row(row: dict) -> list:
    """A line of results.jsonl as a row of results.csv: its pair record flattened (records.PairResult.to_row)."""
    context = {"pair_index": row["pair_index"], "label": row["label"]}
    return table_row(RESULTS_CSV_COLUMNS, context | pair_from_json(row).to_row())
