"""One prepared GPU run: training, inference options and MTCNN on one CUDA GPU, in under 8 minutes, as Markdown.

    bash bench/gpu.sh                          # writes gpu_report.md
    bash bench/gpu.sh --shrink /tmp/report.md  # everything tiny, on the CPU: checks the script end to end

Three benchmarks run one after another, each in its own process with its own time limit, so that one that
fails or hangs costs only its own table (the report says why it is missing): bench.train under --precision 16 and
bf16 on generated crops (images/s, data-wait share, peak memory), bench.options (end-to-end faces/s of
every inference option against the batched facenet-pytorch floor, with their numerics; --compile) and
bench.detection (MTCNN in size buckets against photo by photo). Each writes its figures as JSON (--json),
from which the tables are made. The report starts with the card's name, the torch and CUDA versions, the
date and the exact commands.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.cli import BENCHMARK_EXIT_CODES, benchmark_parser, run_benchmark

ROOT = Path(__file__).resolve().parents[1]  # the repository root: `python -m bench.X` runs from there
EXAMPLES = (
    "bash bench/gpu.sh                          # writes gpu_report.md",
    "bash bench/gpu.sh --shrink /tmp/report.md  # everything tiny, on the CPU",
    "bash bench/gpu.sh --ckpt checkpoints/best.ckpt gpu_report.md",
)
SECTIONS = {
    "train": "Training (bench.train)",
    "options": "Inference (bench.options)",
    "detection": "MTCNN (bench.detection)",
}
FAILED_LINES = 8  # of a failed step's stderr, in the report
EXIT_CODES = BENCHMARK_EXIT_CODES | {7: "the report was written, but a step failed or ran out of time: it says which"}


@dataclasses.dataclass(frozen=True)
class Step:
    section: str  # a key of SECTIONS
    module: str
    arguments: tuple[str, ...]
    timeout_s: int

    def command(self) -> str:
        return " ".join(["uv run python -m", self.module, *self.arguments])


@dataclasses.dataclass(frozen=True)
class Outcome:
    step: Step
    seconds: float
    figures: dict | None  # the benchmark's --json; None when it failed
    failure: str | None


def steps(shrink: bool, checkpoint: Path | None) -> list[Step]:
    """The run's steps. Full: a few hundred training steps in all (60 measured per loop, two loops, two
    precisions, batch 256), 100 pairs, 96 photos per MTCNN collection; time limits summing to 460 s.
    Shrunk: the same steps on the CPU, each as small as it can be, with limits for a loaded shared machine
    (on the project's shared 2-core machine, under a load of 6 to 9, a shrunk run took 15 minutes)."""
    ckpt = ("--ckpt", str(checkpoint)) if checkpoint else ()
    if shrink:
        tiny_mtcnn = ("--chunk", "4", "--bucket-sides", "64", "--repeats", "1")
        train = ("--device", "cpu", "--batch-size", "4", "--steps", "1", "--img-size", "80", "--num-workers", "0")
        return [
            *(Step("train", "bench.train", (*train, "--precision", p), 300) for p in ("32", "bf16")),
            Step("options", "bench.options", ("--device", "cpu", "--pairs", "2", "--repeats", "1", *ckpt), 600),
            Step("detection", "bench.detection", ("--device", "cpu", "--photos", "4", *tiny_mtcnn), 300),
        ]  # fmt: skip
    train = ("--device", "cuda", "--batch-size", "256", "--steps", "60")
    return [
        *(Step("train", "bench.train", (*train, "--precision", p), 110) for p in ("16", "bf16")),
        Step("options", "bench.options", ("--device", "cuda", "--pairs", "100", "--compile", *ckpt), 170),
        Step("detection", "bench.detection", ("--device", "cuda", "--photos", "96", "--repeats", "3"), 70),
    ]  # fmt: skip


def run_step(step: Step, json_path: Path) -> Outcome:
    """Run one benchmark in its own process; a failure or a time-out is an Outcome saying so, not an exception."""
    command = [sys.executable, "-m", step.module, *step.arguments, "--json", str(json_path)]
    print(f"running: {step.command()}", flush=True)
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=step.timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return Outcome(step, time.perf_counter() - start, None, f"timed out after {step.timeout_s} s")
    seconds = time.perf_counter() - start
    if done.returncode != 0 or not json_path.is_file():
        tail = "\n".join(done.stderr.strip().splitlines()[-FAILED_LINES:])
        return Outcome(step, seconds, None, f"exit code {done.returncode}\n\n```\n{tail}\n```")
    return Outcome(step, seconds, json.loads(json_path.read_text()), None)


def header(shrink: bool) -> list[str]:
    import torch

    card = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA GPU (the CPU ran it)"
    return [
        "# GPU benchmark (bash bench/gpu.sh)",
        "",
        f"- card: {card}",
        f"- torch {torch.__version__}, CUDA {torch.version.cuda or 'none'}",
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        f"- mode: {'shrunk (--shrink): tiny runs on the CPU, figures meaningless' if shrink else 'full'}",
    ]


def training_table(outcomes: list[Outcome]) -> list[str]:
    lines = ["| precision | loop | images/s | data wait | peak memory (MB) |", "| --- | --- | --- | --- | --- |"]
    for figures in (o.figures for o in outcomes if o.figures):
        for loop in ("bare", "lightning"):
            lines.append(
                f"| {figures['precision']} | {loop} | {figures[f'{loop}_images_per_s']:.1f} "
                f"| {figures[f'{loop}_data_wait']:.1%} | {figures['peak_memory_mb']:.0f} |"
            )
    return lines


def options_table(outcomes: list[Outcome]) -> list[str]:
    lines = []
    for figures in (o.figures for o in outcomes if o.figures):
        lines += [
            f"{figures['pairs']} pairs of distinct photos, median of {figures['repeats']} turns, start-up apart.",
            "",
            (
                "| way | faces/s | x floor | first call (s) | largest change of similarity | of age (years) "
                "| verdicts | goal |"
            ),
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for row in figures["rows"]:
            change = row["similarity_change"] is not None
            similarity = f"{row['similarity_change']:.5f}" if change else "-"
            age = f"{row['age_change']:.3f}" if change and row["age_change"] is not None else "-"
            verdicts = "-" if row["verdict_flipped"] is None else ("flipped" if row["verdict_flipped"] else "same")
            goal = "-" if row["met"] is None else f"{'met' if row['met'] else 'not met'}: {row['goal']}"
            lines.append(
                f"| {row['name']} | {row['faces_per_s']:.1f} | {row['speed_up']:.2f} | {row['first_call_s']:.1f} "
                f"| {similarity} | {age} | {verdicts} | {goal} |"
            )
        if figures["compile_s"] is not None:
            payoff = "never" if figures["payoff_photos"] is None else f"{figures['payoff_photos']:.0f}"
            lines += ["", f"Compile time {figures['compile_s']:.1f} s; compiling pays off after {payoff} photos."]
        lines += [f"\nNote: {note}." for note in figures["notes"]]
    return lines


def detection_table(outcomes: list[Outcome]) -> list[str]:
    lines = ["| collection | way | photos/s | x photo by photo | PNet calls/chunk | padding |"]
    lines.append("| --- | --- | --- | --- | --- | --- |")
    for figures in (o.figures for o in outcomes if o.figures):
        for row in figures["rows"]:
            padding = "-" if row["padding"] is None else f"{row['padding']:.2f}"
            lines.append(
                f"| {row['collection']} | {row['way']} | {row['photos_per_s']:.1f} | {row['ratio']:.2f} "
                f"| {row['pnet_calls_per_chunk']:.1f} | {padding} |"
            )
    return lines


TABLES = {"train": training_table, "options": options_table, "detection": detection_table}


def report(shrink: bool, outcomes: list[Outcome]) -> str:
    total = sum(o.seconds for o in outcomes)
    lines = header(shrink) + ["", f"Commands, run from the repository root ({total:.0f} s in all):", "", "```bash"]
    lines += [f"{o.step.command()}    # {o.seconds:.0f} s" for o in outcomes] + ["```"]
    lines.append("Each also got `--json FILE`, the figures the tables below are made from.")
    for section, title in SECTIONS.items():
        ran = [o for o in outcomes if o.step.section == section]
        lines += ["", f"## {title}", ""]
        lines += [f"**Failed**: `{o.step.command()}`: {o.failure}\n" for o in ran if o.failure]
        if any(o.figures for o in ran):
            lines += TABLES[section](ran)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser("python -m bench.gpu", __doc__, EXAMPLES, EXIT_CODES)
    parser.group("output").add_argument(
        "report", nargs="?", type=Path, default=Path("gpu_report.md"), help="Markdown file to write"
    )
    parser.group("model").add_argument("--ckpt", type=Path, help="age checkpoint (default: a random one)")
    parser.group("benchmark").add_argument("--shrink", action="store_true", help="tiny runs on the CPU (a test)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        planned = steps(args.shrink, args.ckpt.resolve() if args.ckpt else None)
        outcomes = [run_step(step, Path(scratch) / f"step_{n}.json") for n, step in enumerate(planned)]
    args.report.write_text(report(args.shrink, outcomes))
    failed = [o.step.command() for o in outcomes if o.failure]
    print(f"wrote {args.report}" + (f"; failed: {'; '.join(failed)}" if failed else ""))
    return 7 if failed else 0  # face_match_age.exit_codes.ExitCode.PARTIAL


if __name__ == "__main__":
    run_benchmark(main)
