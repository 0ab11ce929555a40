"""Benchmark: FaceAnalyzer's network options (channels-last, bf16, torch.compile) against float32 eager.

    uv run python -m bench.network_options                    # batch 32, 5 repeats
    uv run python -m bench.network_options --compile          # also torch.compile (minutes on a CPU)

Both networks (verifier and age model) run FaceAnalyzer.network_outputs on the same batch of detected
face crops under each option, the options taking turns within every repeat so that a busy machine slows
them alike; the median ms/face is shown with its ratio to float32 eager. With the same outputs, the
numerics of face_match_age.inference.numerics: the largest change of cosine similarity (over every pair
of faces), of predicted age, and the verdicts at the threshold that flipped. A compiled option's first
call, which compiles, is shown apart. MTCNN is not timed: no option touches it.

Where the VGGFace2 weights or an age checkpoint are missing, random ones in the real layout with
calibrated BatchNorm statistics are used (with untrained statistics every face gives the same output
and no option could change anything).
"""

from __future__ import annotations

import functools
import statistics
import tempfile
import time
from pathlib import Path

from bench.cli import benchmark_parser, run_benchmark
from bench.model_files import ensure_models
from bench.photos import WHOLE_PHOTO, write_astronaut_variants
from config import Config

EXAMPLES = (
    "uv run python -m bench.network_options",
    "uv run python -m bench.network_options --batch 32 --repeats 7 --compile",
)
OPTIONS = {  # FaceAnalyzer keyword arguments over float32 eager
    "fp32 eager": {},
    "channels-last": {"channels_last": True},
    "bf16": {"precision": "bf16"},
    "bf16 + channels-last": {"precision": "bf16", "channels_last": True},
}
COMPILED = {"compile + channels-last": {"compile_networks": True, "channels_last": True}}


def measure(options: dict, make_analyzer, crops, repeats: int) -> dict:
    """{option: (median s per batch, first call s, outputs)}; options this machine refuses are left out
    with a note."""
    from face_match_age.device import PrecisionError
    from face_match_age.inference.numerics import FP32_EAGER

    analyzers, first_calls, outputs = {}, {}, {}
    for name, option in options.items():
        try:
            analyzers[name] = make_analyzer(**(FP32_EAGER | option))
        except PrecisionError as error:
            print(f"note: {name} skipped: {error}")
            continue
        start = time.perf_counter()
        outputs[name] = analyzers[name].network_outputs(crops)  # warm-up; compiles a compiled option
        first_calls[name] = time.perf_counter() - start
    samples = {name: [] for name in analyzers}
    for _ in range(repeats):
        for name, analyzer in analyzers.items():
            start = time.perf_counter()
            analyzer.network_outputs(crops)
            samples[name].append(time.perf_counter() - start)
    return {name: (statistics.median(samples[name]), first_calls[name], outputs[name]) for name in analyzers}


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser("python -m bench.network_options", __doc__, EXAMPLES)
    parser.group("data").add_argument("--batch", type=int, default=32, help="faces per forward pass (distinct)")
    parser.group("model").add_argument("--ckpt", type=Path, help="age checkpoint (default: a random one)")
    parser.group("model").add_argument("--threshold", type=float, help="verdict threshold (default: the config's)")
    parser.group("hardware").add_argument("--device", default="cpu", help="cpu, cuda...")
    parser.group("benchmark").add_argument("--repeats", type=int, default=5, help="timed turns; the median is shown")
    parser.group("benchmark").add_argument("--compile", action="store_true", help="also time torch.compile")
    args = parser.parse_args(argv)

    from face_match_age.inference.analyzer import FaceAnalyzer
    from face_match_age.inference.numerics import FP32_EAGER, compare_outputs, face_crops

    config = Config(inference_batch_size=args.batch)
    threshold = config.verification_threshold if args.threshold is None else args.threshold
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        checkpoint, notes = ensure_models(scratch, args.ckpt)
        print("".join(f"note: {note}\n" for note in notes), end="")
        photos = write_astronaut_variants(scratch / "photos", args.batch, WHOLE_PHOTO, sides=(250,))
        make_analyzer = functools.partial(FaceAnalyzer, config, age_checkpoint=checkpoint, device=args.device)
        crops = face_crops(make_analyzer(**FP32_EAGER), photos)
        results = measure(OPTIONS | (COMPILED if args.compile else {}), make_analyzer, crops, args.repeats)
    baseline, _, reference = results["fp32 eager"]
    print(
        f"\ndevice {args.device}; {len(crops)} faces per batch; median of {args.repeats} turns; threshold {threshold}"
    )
    print(f"{'option':<26}{'ms/face':>9}{'speed-up':>9}{'first call s':>13}{'|d sim|':>10}{'|d age|':>9}  verdicts")
    for name, (seconds, first_call, outputs) in results.items():
        change = compare_outputs(reference, outputs, threshold)
        flipped = "flipped" if change.verdict_flipped else f"same ({change.matches} of {change.pairs} pairs match)"
        print(
            f"{name:<26}{seconds * 1e3 / len(crops):>9.2f}{baseline / seconds:>9.2f}{first_call:>13.1f}"
            f"{change.similarity:>10.5f}{change.age:>9.3f}  {flipped}"
        )
    return 0


if __name__ == "__main__":
    run_benchmark(main)
