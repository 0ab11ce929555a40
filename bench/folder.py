"""Benchmark: infer.py --folder's cost against the number of photos, split into embedding and search + writing.

    uv run python -m bench.folder                        # N = 100 and 1,000 generated photos
    uv run python -m bench.folder --sizes 50,200 --device cpu

Each size gets N distinct photos (scikit-image's astronaut in her whole setting, shifted, scaled and
mirrored: detection has a whole photo to search) and the real command `infer.py --folder DIR OUT_DIR --ckpt
CKPT` run twice into the same OUT_DIR, each run in a fresh process: the first detects, embeds, searches and
writes; the second finds every photo in OUT_DIR's embedding store, so it embeds nothing, loads no models and
only searches and writes. Printed per size: the embedding stage's seconds (first run minus second, minus the
models' build time) and per photo, the search + write seconds (the second run), the first run's peak memory
(the process's maximum resident set size, resource.getrusage) and that peak beyond the models (minus the peak
of a fresh process that only builds the models with the same options), the second run's peak beyond the
imports (search and writing alone), the growth exponent of the times and of the memory beyond the models
between sizes (log(t2/t1) / log(N2/N1): 1 is linear), faces.csv's rows and matches.csv's matches. Then the
memory of a 10,000-photo folder against the goal, within 2 GB beyond the models: measured where a size reaches
10,000, otherwise extrapolated linearly from the growth between the last two sizes.

The photos all show one person, so every pair matches: matches.csv holds N(N-1)/2 rows, the most any
folder can have. Speed does not depend on weight values: where the VGGFace2 weights or an age checkpoint
are missing, random ones with the real layout are written to a temporary folder (bench.model_files.ensure_models).
"""

from __future__ import annotations

import csv
import json
import math
import sys
import tempfile
from pathlib import Path

from bench.cli import benchmark_parser, run_benchmark, run_with_deadline
from bench.model_files import ensure_models
from bench.photos import WHOLE_PHOTO, write_astronaut_variants
from bench.search import sizes
from config import DEVICE_HELP, text_type

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = (
    "uv run python -m bench.folder                        # N = 100 and 1,000 generated photos",
    "uv run python -m bench.folder --sizes 50,200 --device cpu",
)
# Four sides with write_astronaut_variants' shifts (cycles of 9, 7 and 5) keep the first 1,260 photos distinct.
SIDES = (250, 300, 350, 400)
# Deadlines of the fresh processes, far beyond their normal time (on a CPU, under a second a photo): only a
# process that hangs reaches them.
MODELS_DEADLINE_S = 600
RUN_DEADLINE_S_PER_PHOTO = 10
GOAL_PHOTOS, GOAL_MB = 10_000, 2048  # issue 12: a 10,000-photo folder within 2 GB beyond the models


def folder_argv(folder: str, out_dir: str, checkpoint: str, device: str) -> list[str]:
    """infer.py's command line, the same for the runs and for the models-only process."""
    return ["--folder", folder, out_dir, "--ckpt", checkpoint, "--device", device]


def peak_mb() -> float:
    """This process's maximum resident set size so far (or a worker's, should infer.py start any)."""
    import resource

    peaks = (resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return max(peaks) / 1024  # kilobytes on Linux


def measure_models(checkpoint: str, device: str) -> None:
    """Run in a fresh process: build the models as infer.py --folder would and print one JSON line (the peak
    after the imports alone is the baseline of a run that loads no models)."""
    import time

    from face_match_age import cli

    imports_mb = peak_mb()
    args, config = cli.parse_command(folder_argv("photos", "out", checkpoint, device))
    start = time.perf_counter()
    analyzer = cli.analyzer_factory(args, config, cli.age_model_status(args, config))(device=device)
    seconds = time.perf_counter() - start
    print(
        json.dumps({"seconds": seconds, "peak_mb": peak_mb(), "imports_mb": imports_mb, "device": str(analyzer.device)})
    )


def measure_folder(folder: str, out_dir: str, checkpoint: str, device: str) -> None:
    """Run in a fresh process: infer.py --folder once and print one JSON line of figures."""
    import time

    import infer

    start = time.perf_counter()
    code = infer.main(folder_argv(folder, out_dir, checkpoint, device))
    seconds = time.perf_counter() - start
    with open(Path(out_dir) / "faces.csv", newline="", encoding="utf-8") as handle:
        faces = list(csv.DictReader(handle))
    with open(Path(out_dir) / "matches.csv", newline="", encoding="utf-8") as handle:
        matches = sum(1 for _ in csv.DictReader(handle))
    no_face = sum(1 for row in faces if row.get("error"))
    figures = {"seconds": seconds, "code": code, "peak_mb": peak_mb(), "faces_rows": len(faces)}
    print(json.dumps(figures | {"no_face": no_face, "matches": matches}))


def in_fresh_process(what: str, deadline_s: float, function: str, *arguments: str) -> dict:
    """The figures this module's `function` prints as its last line when a new Python calls it with `arguments`
    (killed, and the benchmark stopped, should it run past `deadline_s`)."""
    code = f"from bench.folder import {function}; {function}({', '.join(map(repr, arguments))})"
    command = [sys.executable, "-c", code]
    done = run_with_deadline(command, what, deadline_s, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{what} failed:\n{done.stderr.strip()}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_size(scratch: Path, size: int, checkpoint: Path, device: str, sides: tuple[int, ...]) -> list[dict]:
    """The figures of two runs of infer.py --folder into one OUT_DIR, each in a fresh process: the first
    embeds, searches and writes; the second finds every photo in the store and only searches and writes."""
    from infer import EXIT_OK, EXIT_PAIRS_FAILED

    folder, out_dir = scratch / f"photos_{size}", scratch / f"out_{size}"
    write_astronaut_variants(folder, size, WHOLE_PHOTO, sides=sides)
    runs = []
    for run in ("first", "second"):
        what = f"the {run} infer.py --folder run on {size} photos"
        deadline_s = MODELS_DEADLINE_S + RUN_DEADLINE_S_PER_PHOTO * size
        arguments = (str(folder), str(out_dir), str(checkpoint), device)
        runs.append(in_fresh_process(what, deadline_s, "measure_folder", *arguments))
        if runs[-1]["code"] not in (EXIT_OK, EXIT_PAIRS_FAILED):
            raise SystemExit(f"{what} exited {runs[-1]['code']}")
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser("python -m bench.folder", __doc__, EXAMPLES)
    parser.group("data").add_argument(
        "--sizes", type=text_type(sizes), default=[100, 1_000], help="photo counts, comma-separated"
    )
    parser.group("data").add_argument(
        "--sides",
        type=text_type(sizes),
        default=list(SIDES),
        help="the photos' sides in pixels, in turn, comma-separated",
    )
    parser.group("model").add_argument("--ckpt", type=Path, help="age checkpoint (default: a random one)")
    parser.group("hardware").add_argument("--device", default="auto", help=DEVICE_HELP)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        checkpoint, notes = ensure_models(scratch, args.ckpt)
        for note in notes:
            print(f"note: {note}")
        models = in_fresh_process(
            "building the models", MODELS_DEADLINE_S, "measure_models", str(checkpoint), args.device
        )
        for size in args.sizes:
            rows.append((size, measure_size(scratch, size, checkpoint, args.device, tuple(args.sides))))
    print_table(rows, models)
    return 0


def exponent(value: float, previous: float, size: int, previous_size: int) -> str:
    """log(value/previous) / log(size/previous_size), or "-" where a figure is not positive."""
    if min(value, previous) <= 0 or size == previous_size:
        return "-"
    return f"{math.log(value / previous) / math.log(size / previous_size):.2f}"


def sized_figures(size: int, runs: list[dict], models: dict) -> dict:
    """One size's printed figures from its two runs' and the models-only process's."""
    first, second = runs
    return {
        "size": size,
        "embedding_s": first["seconds"] - second["seconds"] - models["seconds"],
        "search_s": second["seconds"],
        "peak_mb": first["peak_mb"],
        "beyond_mb": first["peak_mb"] - models["peak_mb"],
        "search_mb": second["peak_mb"] - models["imports_mb"],
        "faces": f"{first['faces_rows']}/{size}",
        "no_face": first["no_face"],
        "matches": first["matches"],
    }


def print_table(rows: list[tuple[int, list[dict]]], models: dict) -> None:
    print(
        f"\ndevice {models['device']}; models: {models['seconds']:.1f} s to build, {models['peak_mb']:.0f} MB max "
        "RSS; each size: infer.py --folder twice into one OUT_DIR, each run in a fresh process, the second only "
        "searching and writing (its memory: beyond the imports, no models loaded)"
    )
    print(
        f"{'N':>6}{'s/photo':>9}{'embedding s':>13}{'search+write s':>16}{'peak MB':>9}{'beyond models MB':>18}"
        f"{'search+write MB':>17}{'embed exp':>11}{'search exp':>12}{'memory exp':>12}{'faces.csv rows':>16}"
        f"{'matches':>9}"
    )
    table = [sized_figures(size, runs, models) for size, runs in rows]
    for index, row in enumerate(table):
        growth = ["-"] * 3
        if index:
            previous = table[index - 1]
            keys = ("embedding_s", "search_s", "beyond_mb")
            growth = [exponent(row[key], previous[key], row["size"], previous["size"]) for key in keys]
        print(
            f"{row['size']:>6}{row['embedding_s'] / row['size']:>9.3f}{row['embedding_s']:>13.1f}"
            f"{row['search_s']:>16.2f}{row['peak_mb']:>9.0f}{row['beyond_mb']:>18.0f}{row['search_mb']:>17.0f}"
            f"{growth[0]:>11}{growth[1]:>12}{growth[2]:>12}{row['faces']:>16}{row['matches']:>9}"
        )
    no_face = sum(row["no_face"] for row in table)
    if no_face:
        print(f"photos without a face: {no_face} (their rows in faces.csv carry the error)")
    print_memory_extrapolation(table)


def print_memory_extrapolation(table: list[dict]) -> None:
    """The memory of a GOAL_PHOTOS folder against the goal: measured where a size reached it, else extrapolated
    linearly from the last two sizes."""
    reached = [row for row in table if row["size"] >= GOAL_PHOTOS]
    if reached:
        row = reached[0]
        verdict = "within" if row["beyond_mb"] <= GOAL_MB else "over"
        print(
            f"measured: {row['beyond_mb']:.0f} MB beyond the models for {row['size']:,} photos and "
            f"{row['matches']:,} matches, {verdict} the goal of {GOAL_MB} MB for {GOAL_PHOTOS:,} photos"
        )
        return
    if len(table) < 2:
        print(f"memory for {GOAL_PHOTOS:,} photos: extrapolation needs two sizes")
        return
    first, last = table[-2:]
    # A fall between sizes is noise in the peaks (the models' loading peak dominates small runs), not a saving.
    per_photo = max(0.0, (last["beyond_mb"] - first["beyond_mb"]) / (last["size"] - first["size"]))
    estimate = max(0.0, last["beyond_mb"]) + per_photo * (GOAL_PHOTOS - last["size"])
    verdict = "within" if estimate <= GOAL_MB else "over"
    print(
        f"extrapolation, not a measurement: {per_photo * 1024:.0f} KB more per photo from {first['size']} to "
        f"{last['size']} photos gives ~{estimate:.0f} MB beyond the models for {GOAL_PHOTOS:,} photos, {verdict} "
        f"the goal of {GOAL_MB} MB"
    )


if __name__ == "__main__":
    run_benchmark(main)
