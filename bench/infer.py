"""Benchmark: infer.py against the facenet-pytorch floor (bench/floor.py), in one run on one machine.

    uv run python -m bench.infer                         # CPU or GPU, whichever this machine has
    uv run python -m bench.infer --photos 32 --repeats 5

Prints, each as ours / floor: warm pair latency (models loaded), cold pair latency (process start
to JSON written), and batch throughput in faces/s (infer.py --pairs against the floor running pair
after pair), plus batch mode against our own pair-by-pair runs. Goals: warm <= 1.15x the floor,
cold <= 1.3x, batch >= 2x the faces/s of pair-by-pair runs.

Speed does not depend on weight values: where the VGGFace2 weights or an age checkpoint are
missing, random ones with the real layout (bench.model_files.ensure_models) are written to a temporary folder
and used instead.
"""

from __future__ import annotations

import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.cli import benchmark_parser, run_benchmark, run_with_deadline
from bench.model_files import ensure_models
from bench.photos import WHOLE_PHOTO, write_astronaut_variants

ROOT = Path(__file__).resolve().parents[1]  # the repository root, where infer.py is
COLD_PAIR_DEADLINE_S = 600  # a cold pair takes seconds: only a process that hangs reaches it
EXAMPLES = (
    "uv run python -m bench.infer                         # CPU or GPU, whichever this machine has",
    "uv run python -m bench.infer --photos 32 --repeats 5",
    "uv run python -m bench.infer --device cuda",
)


def timed(function, repeats: int) -> float:
    """Median seconds of `repeats` calls."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def warm_latencies(photos, checkpoint, out: Path, device: str, repeats: int) -> tuple[float, float]:
    from bench import floor
    from face_match_age import cli
    from face_match_age.detection.imaging import load_image
    from face_match_age.inference.analyzer import FaceAnalyzer

    analyzer = FaceAnalyzer(age_checkpoint=checkpoint, device=device)
    floor_models = floor.load_models(checkpoint, analyzer.device)

    def ours():
        loaded = [load_image(p) for p in photos[:2]]
        cli.compare_and_write(analyzer, photos[:2], loaded, out / "ours", write_json_file=True)

    (out / "ours").mkdir(parents=True, exist_ok=True)
    (out / "floor").mkdir(parents=True, exist_ok=True)
    ours(), floor.pair(floor_models, *photos[:2], out / "floor")  # warm-up
    return timed(ours, repeats), timed(lambda: floor.pair(floor_models, *photos[:2], out / "floor"), repeats)


def cold_latencies(photos, checkpoint, out: Path, device: str, repeats: int) -> tuple[float, float]:
    ours = [
        sys.executable,
        str(ROOT / "infer.py"),
        str(photos[0]),
        str(photos[1]),
        str(out / "cold_ours"),
        "--json",
        "--ckpt",
        str(checkpoint),
        "--device",
        device,
    ]
    floor = [
        sys.executable,
        "-m",
        "bench.floor",
        str(photos[0]),
        str(photos[1]),
        str(out / "cold_floor"),
        str(checkpoint),
    ]

    def run(command):
        what = "a cold pair in a fresh process"
        run_with_deadline(command, what, COLD_PAIR_DEADLINE_S, cwd=ROOT, check=True, capture_output=True)

    return timed(lambda: run(ours), repeats), timed(lambda: run(floor), repeats)


def batch_rates(photos, checkpoint, out: Path, device: str) -> tuple[float, float, float]:
    """faces/s (two per pair) over every pair of `photos`, as infer.py --folder would compare them: of one
    infer.py --pairs run (model loading included), of the floor pair after pair and of our own pair-by-pair
    calls (both with models already loaded)."""
    import infer
    from bench import floor
    from face_match_age import cli
    from face_match_age.detection.imaging import load_image
    from face_match_age.inference.analyzer import FaceAnalyzer

    pairs = list(itertools.combinations(photos, 2))
    csv_path = out / "pairs.csv"
    csv_path.write_text("img1,img2\n" + "".join(f"{a},{b}\n" for a, b in pairs))
    faces = 2 * len(pairs)
    batch_s = timed(
        lambda: infer.main(
            ["--pairs", str(csv_path), str(out / "batch"), "--ckpt", str(checkpoint), "--device", device]
        ),
        1,
    )
    floor_models = floor.load_models(checkpoint, torch.device(device if device != "auto" else "cpu"))
    floor_s = timed(lambda: [floor.pair(floor_models, a, b, out / "floor") for a, b in pairs], 1)
    analyzer = FaceAnalyzer(age_checkpoint=checkpoint, device=device)
    ours_s = timed(
        lambda: [
            cli.compare_and_write(analyzer, [a, b], [load_image(a), load_image(b)], out / "ours", write_json_file=True)
            for a, b in pairs
        ],
        1,
    )
    return faces / batch_s, faces / floor_s, faces / ours_s


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser("python -m bench.infer", __doc__, EXAMPLES)
    parser.group("data").add_argument(
        "--photos", type=int, default=10, help="distinct photos; the batch run compares every pair"
    )
    parser.group("model").add_argument("--ckpt", type=Path, help="age checkpoint (default: a random one)")
    parser.group("hardware").add_argument(
        "--device", default="cpu", help="cpu, cuda...; the floor runs on the same device"
    )
    parser.group("benchmark").add_argument(
        "--repeats", type=int, default=3, help="runs per latency figure; the median is shown"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        checkpoint, notes = ensure_models(scratch, args.ckpt)
        print("".join(f"note: {note}\n" for note in notes), end="")
        photos = write_astronaut_variants(
            scratch / "photos", max(2, args.photos), WHOLE_PHOTO, sides=(400, 430, 460, 490)
        )
        warm = warm_latencies(photos, checkpoint, scratch, args.device, args.repeats)
        cold = cold_latencies(photos, checkpoint, scratch, args.device, args.repeats)
        batch, floor_rate, pair_by_pair = batch_rates(photos, checkpoint, scratch, args.device)
    pair_count = len(photos) * (len(photos) - 1) // 2
    print(
        f"\ndevice {args.device}; {args.repeats} repeats (median); "
        f"batch: all {pair_count} pairs of {len(photos)} photos"
    )
    print(f"{'measure':<28}{'ours':>10}{'floor':>10}{'ratio':>8}  goal")
    print(
        f"{'warm pair latency (ms)':<28}{warm[0] * 1e3:>10.0f}{warm[1] * 1e3:>10.0f}{warm[0] / warm[1]:>8.2f}  <= 1.15"
    )
    print(
        f"{'cold pair latency (ms)':<28}{cold[0] * 1e3:>10.0f}{cold[1] * 1e3:>10.0f}{cold[0] / cold[1]:>8.2f}  <= 1.30"
    )
    print(f"{'batch faces/s vs floor':<28}{batch:>10.1f}{floor_rate:>10.1f}{batch / floor_rate:>8.2f}")
    print(f"{'batch vs our pair-by-pair':<28}{batch:>10.1f}{pair_by_pair:>10.1f}{batch / pair_by_pair:>8.2f}  >= 2.00")
    return 0


if __name__ == "__main__":
    run_benchmark(main)
