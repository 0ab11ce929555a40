"""Benchmark: FaceAnalyzer.analyze_many sequential against overlapped (the next chunk read and detected in a
background thread while the networks process the current one), on the same distinct photos in one process.

    uv run python -m bench.overlap                       # 96 photos, 5 rounds of each
    uv run python -m bench.overlap --photos 128 --rounds 8

Runs alternate (sequential, overlapped, sequential, ...) so that a change in the machine's load touches
both; each round's ratio compares two neighbouring runs. Prints faces/s per run, then the median ratio
overlapped / sequential and its spread (lowest and highest round). Models are loaded and warmed up before
timing. Speed does not depend on weight values: missing weights are replaced by random ones with the real
layout (see bench/infer.py).
"""

from __future__ import annotations

import contextlib
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench.cli import benchmark_parser, run_benchmark
from bench.model_files import ensure_models
from bench.photos import WHOLE_PHOTO, write_astronaut_variants

EXAMPLES = (
    "uv run python -m bench.overlap                       # 96 photos, 5 rounds of each",
    "uv run python -m bench.overlap --photos 128 --rounds 8",
    "uv run python -m bench.overlap --device cuda",
)
MODES = {"sequential": False, "overlapped": True}  # analyze_many's `overlap`


def process_cpu_seconds() -> float:
    """CPU time of this process, every thread included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed_run(analyzer, photos: list[Path], overlap: bool, photos_per_chunk: int) -> tuple[float, float]:
    """(faces/s, cores used: CPU seconds per second) over `photos`, each face counted once (the chosen one).
    The cores used tell a real gain (idle cores put to work) from a larger share of a busy machine."""
    start, cpu_start = time.perf_counter(), process_cpu_seconds()
    analyses = analyzer.analyze_many(photos, photos_per_chunk=photos_per_chunk, overlap=overlap)
    with contextlib.closing(analyses):
        faces = sum(len(analysis.faces) for analysis in analyses)
    seconds = time.perf_counter() - start
    return faces / seconds, (process_cpu_seconds() - cpu_start) / seconds


def alternating_runs(analyzer, photos: list[Path], rounds: int, photos_per_chunk: int) -> dict[str, list[tuple]]:
    """(faces/s, cores used) of each mode, `rounds` runs each, the modes taking turns."""
    runs: dict[str, list[tuple]] = {mode: [] for mode in MODES}
    for number in range(rounds):
        for mode, overlap in MODES.items():
            runs[mode].append(timed_run(analyzer, photos, overlap, photos_per_chunk))
        # each round as it ends: on a shared machine, the load says which rounds to trust
        latest = "  ".join(f"{mode} {runs[mode][-1][0]:.2f} faces/s on {runs[mode][-1][1]:.2f} cores" for mode in MODES)
        print(f"round {number + 1}: {latest}; load average {os.getloadavg()[0]:.1f}", flush=True)
    return runs


def report(runs: dict[str, list[tuple]], photos: int, photos_per_chunk: int, device: str) -> None:
    rates = {mode: [rate for rate, _ in values] for mode, values in runs.items()}
    ratios = [o / s for o, s in zip(rates["overlapped"], rates["sequential"])]
    print(
        f"\ndevice {device}; {photos} photos in chunks of {photos_per_chunk}; torch threads "
        f"{torch.get_num_threads()}; {len(ratios)} alternating rounds; load average {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} cores"
    )
    print(f"{'mode':<14}{'median':>10}{'min':>10}{'max':>10}  faces/s{'cores used':>14}")
    for mode, values in rates.items():
        cores = statistics.median(used for _, used in runs[mode])
        print(f"{mode:<14}{statistics.median(values):>10.2f}{min(values):>10.2f}{max(values):>10.2f}{cores:>21.2f}")
    print(
        f"overlapped / sequential: {statistics.median(ratios):.3f} (rounds from {min(ratios):.3f} to {max(ratios):.3f})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser("python -m bench.overlap", __doc__, EXAMPLES)
    parser.group("data").add_argument("--photos", type=int, default=96, help="distinct photos, one face each")
    parser.group("data").add_argument(
        "--photos-per-chunk", type=int, default=16, help="analyze_many's chunk: photos detected together"
    )
    parser.group("model").add_argument("--ckpt", type=Path, help="age checkpoint (default: a random one)")
    parser.group("hardware").add_argument("--device", default="cpu", help="cpu, cuda...")
    parser.group("hardware").add_argument(
        "--threads", type=int, help="torch.set_num_threads for the whole run (default: torch's, one per core)"
    )
    parser.group("benchmark").add_argument("--rounds", type=int, default=5, help="runs of each mode, taking turns")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from face_match_age.inference.analyzer import FaceAnalyzer

    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        checkpoint, notes = ensure_models(scratch, args.ckpt)
        for note in notes:
            print(f"note: {note}")
        photos = write_astronaut_variants(
            scratch / "photos", max(1, args.photos), WHOLE_PHOTO, sides=(400, 430, 460, 490)
        )
        analyzer = FaceAnalyzer(age_checkpoint=checkpoint, device=args.device)
        for overlap in MODES.values():  # warm-up: first calls allocate and pick kernels
            timed_run(analyzer, photos[: args.photos_per_chunk], overlap, args.photos_per_chunk)
        runs = alternating_runs(analyzer, photos, max(1, args.rounds), args.photos_per_chunk)
    report(runs, len(photos), args.photos_per_chunk, args.device)
    return 0


if __name__ == "__main__":
    run_benchmark(main)
