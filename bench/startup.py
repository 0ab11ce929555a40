"""Benchmark: how fast the scripts answer, and where a cold pair's time goes, against the facenet-pytorch floor.

    uv run python -m bench.startup                     # --help of every script, and a cold pair on the CPU
    uv run python -m bench.startup --repeats 5 --device cuda

Prints, as the median of --repeats fresh processes: the wall time of `--help` for train.py, infer.py,
evaluate.py and data_prep.py (goal: under 1 s, on 2 cores too), then a cold pair (process start to
JSON written) split into stages, for infer.py and for the bare floor (bench/floor.py): interpreter
(`python -c pass`), imports (the rest of the time before the photos are read: interpreter start-up
aside, importing torch and facenet-pytorch and, for infer.py, parsing its command line), model load
and work (detect, embed, compare, write the JPG and the JSON). Goal: a cold pair no slower than the floor.

infer.py's stages come from its own JSON (timings_ms); the floor's from a probe around bench.floor's
functions. Where the VGGFace2 weights or an age checkpoint are missing, random ones with the real layout
(bench.model_files.ensure_models) are used: speed does not depend on the weight values.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.cli import benchmark_parser, run_benchmark, run_with_deadline

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("train.py", "infer.py", "evaluate.py", "data_prep.py")
HELP_GOAL_S = 1.0
EXAMPLES = (
    "uv run python -m bench.startup                     # --help of every script, and a cold pair on the CPU",
    "uv run python -m bench.startup --repeats 5 --device cuda",
)
PROCESS_DEADLINE_S = 600  # one --help or one cold pair takes seconds; this is only for a process that hangs
STAGES = ("interpreter", "imports", "model load", "work")
# bench.floor's pair in a fresh process, timed around its imports, its model load and its work
FLOOR_PROBE = """
import json, sys, time
started = time.perf_counter()
from bench import floor
imported = time.perf_counter()
models = floor.load_models(sys.argv[4], sys.argv[5])
loaded = time.perf_counter()
floor.pair(models, sys.argv[1], sys.argv[2], sys.argv[3])
print(json.dumps({"load": loaded - imported, "work": time.perf_counter() - loaded}))
"""


def wall(command: list[str]) -> tuple[float, str]:
    """Seconds `command` took, from process start to exit, and its stdout."""
    started = time.perf_counter()
    result = run_with_deadline(
        command, "one process to end", PROCESS_DEADLINE_S, cwd=ROOT, capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    if result.returncode:
        raise SystemExit(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip()[-500:]}")
    return seconds, result.stdout


def help_times(repeats: int) -> dict[str, float]:
    return {
        script: statistics.median(wall([sys.executable, script, "--help"])[0] for _ in range(repeats))
        for script in SCRIPTS
    }


def cold_pair_stages(photos, checkpoint: Path, out: Path, device: str, repeats: int) -> dict[str, dict[str, float]]:
    """{"ours"|"floor": {stage: median seconds}}; imports are the process's wall time less the other stages."""
    interpreter = statistics.median(wall([sys.executable, "-c", "pass"])[0] for _ in range(repeats))
    runs: dict[str, list[dict[str, float]]] = {"ours": [], "floor": []}
    for number in range(repeats):
        target = out / f"ours_{number}"
        seconds, _ = wall(
            [sys.executable, "infer.py", *map(str, photos[:2]), str(target), "--json", "--ckpt", str(checkpoint)]
            + ["--device", device]
        )
        timings = json.loads(next(target.glob("*_data.json")).read_text())["timings_ms"]
        load, total = timings["load_models"] / 1e3, timings["total"] / 1e3
        runs["ours"].append(_stages(seconds, interpreter, load, total - load))
        target = out / f"floor_{number}"
        target.mkdir(parents=True)
        floor_device = "cpu" if device == "auto" else device
        seconds, printed = wall(
            [sys.executable, "-c", FLOOR_PROBE, *map(str, photos[:2]), str(target), str(checkpoint), floor_device]
        )
        measured = json.loads(printed)
        runs["floor"].append(_stages(seconds, interpreter, measured["load"], measured["work"]))
    return {
        who: {stage: statistics.median(run[stage] for run in stages) for stage in (*STAGES, "total")}
        for who, stages in runs.items()
    }


def _stages(seconds: float, interpreter: float, load: float, work: float) -> dict[str, float]:
    return {
        "interpreter": interpreter,
        "imports": seconds - interpreter - load - work,
        "model load": load,
        "work": work,
        "total": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser("python -m bench.startup", __doc__, EXAMPLES)
    parser.group("model").add_argument("--ckpt", type=Path, help="age checkpoint (default: a random one)")
    parser.group("hardware").add_argument("--device", default="cpu", help="cpu, cuda...; the floor uses the same")
    parser.group("benchmark").add_argument(
        "--repeats", type=int, default=3, help="fresh processes per figure; the median is shown"
    )
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    from bench.model_files import ensure_models
    from bench.photos import WHOLE_PHOTO, write_astronaut_variants

    helps = help_times(args.repeats)
    print(f"--help, median of {args.repeats} fresh processes (goal: under {HELP_GOAL_S:g} s)")
    for script, seconds in helps.items():
        print(f"  {script:<14}{seconds:>7.2f} s  {'ok' if seconds < HELP_GOAL_S else 'over the goal'}")
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        checkpoint, notes = ensure_models(scratch, args.ckpt)
        photos = write_astronaut_variants(scratch / "photos", 2, WHOLE_PHOTO, sides=(400, 430))
        stages = cold_pair_stages(photos, checkpoint, scratch, args.device, args.repeats)
    print(f"\ncold pair on {args.device}, seconds, median of {args.repeats} (goal: ours no slower than the floor)")
    print(f"  {'stage':<14}{'ours':>8}{'floor':>8}{'ratio':>8}")
    for stage in (*STAGES, "total"):
        ours, floor = stages["ours"][stage], stages["floor"][stage]
        print(f"  {stage:<14}{ours:>8.2f}{floor:>8.2f}{ours / floor if floor > 0 else float('nan'):>8.2f}")
    print("".join(f"note: {note}\n" for note in notes), end="")
    return 0


if __name__ == "__main__":
    run_benchmark(main)
