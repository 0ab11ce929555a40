"""How every benchmark script starts and ends: its command line, its exit code, or one line and 130 on Ctrl-C."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from config import ConfigArgumentParser

# Every benchmark's exit codes, for its --help (config.help_epilog adds 2, a bad command line).
BENCHMARK_EXIT_CODES = {0: "figures printed", 130: "interrupted (Ctrl-C): no figures printed, scratch files removed"}


def benchmark_parser(prog: str, doc: str, examples, exit_codes: dict | None = None) -> ConfigArgumentParser:
    """A benchmark's command line: its description is the module docstring's first and third paragraphs
    (the second lists the commands, which the epilog gives with the exit codes, by default
    BENCHMARK_EXIT_CODES)."""
    from config import ConfigArgumentParser, help_epilog

    paragraphs = doc.split("\n\n", 2)
    return ConfigArgumentParser(
        prog=prog,
        description=paragraphs[0] + "\n\n" + paragraphs[2],
        epilog=help_epilog(examples, BENCHMARK_EXIT_CODES if exit_codes is None else exit_codes),
    )


def run_benchmark(main: Callable[[], int]) -> None:
    """Run a benchmark's `main` as a script: no traceback when Ctrl-C stops it (its scratch folder is
    already removed by then), just what happened and the shell's code for an interrupted command."""
    try:
        code = main()
    except KeyboardInterrupt:
        print("interrupted: no figures were printed; run it again (a smaller run: see --help)", file=sys.stderr)
        raise SystemExit(130) from None
    raise SystemExit(code)


def run_with_deadline(command: list, what: str, deadline_s: float, **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run for a benchmark's child process, with a deadline far beyond its normal time: past it the
    child is killed and the benchmark stops with one line saying what it waited for, instead of waiting forever."""
    try:
        return subprocess.run(command, timeout=deadline_s, **kwargs)  # noqa: PLW1510  callers pass check= in kwargs
    except subprocess.TimeoutExpired:
        raise SystemExit(f"error: gave up after {deadline_s:.0f} s waiting for {what}: {' '.join(command)}") from None


def write_figures(path: Path | None, figures) -> None:
    """A benchmark's figures (a dataclass) as JSON at `path` (its --json, read by bench.gpu); nothing when None."""
    if path is not None:
        from face_match_age.files.output_files import write_json

        write_json(path, dataclasses.asdict(figures))
