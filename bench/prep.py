"""Benchmark: images/s of data_prep.py's crop-and-resize stage, with 1 and 2 workers, with and without
MTCNN detection, on generated photos (faces made from scikit-image's astronaut), in one run.

    uv run python -m bench.prep                 # 200 photos
    uv run python -m bench.prep --photos 400
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from bench.cli import BENCHMARK_EXIT_CODES, run_benchmark
from bench.photos import FACE_CROP, write_astronaut_variants
from config import ConfigArgumentParser, help_epilog

EXAMPLES = (
    "uv run python -m bench.prep                 # 200 photos",
    "uv run python -m bench.prep --photos 400",
)


def stage_rates(photos: list[Path], out: Path, detect: bool, workers: int) -> tuple[float, float]:
    """(images/s overall, images/s after the first result: without process and model start-up)."""
    from config import Config
    from face_match_age.preparation.crops import CropTask, run_crops

    out.mkdir(parents=True)
    tasks = [CropTask(str(p), str(out / p.name)) for p in photos]
    start = time.perf_counter()
    first_at, after_first, kept = None, 0, 0
    for _, outcome in run_crops(tasks, Config(), detect, workers):
        kept += outcome == "kept"
        if first_at is None:
            first_at = time.perf_counter()
        else:
            after_first += 1
    end = time.perf_counter()
    if kept != len(photos):
        print(f"note: {len(photos) - kept} photos were dropped in this configuration", file=sys.stderr)
    return len(photos) / (end - start), after_first / max(end - first_at, 1e-9)


def main(argv: list[str] | None = None) -> int:
    parser = ConfigArgumentParser(
        prog="python -m bench.prep",
        description=__doc__.split("\n\n")[0],
        epilog=help_epilog(EXAMPLES, BENCHMARK_EXIT_CODES),
    )
    parser.group("data").add_argument("--photos", type=int, default=200, help="generated photos per configuration")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        photos = write_astronaut_variants(Path(scratch) / "photos", args.photos, FACE_CROP, sides=(160, 200, 240, 280))
        for detect in (False, True):
            for workers in (1, 2):
                out = Path(scratch) / f"out_{detect}_{workers}"
                rows.append((detect, workers, *stage_rates(photos, out, detect, workers)))
    print(f"\n{args.photos} photos per configuration; 'steady' leaves out process and model start-up")
    print(f"{'stage':<22}{'workers':>8}{'images/s':>10}{'steady':>10}{'steady vs 1':>13}")
    for detect, workers, rate, steady in rows:
        single = next(s for d, w, _, s in rows if d == detect and w == 1)
        stage = "MTCNN crop" if detect else "resize (--no-detect)"
        print(f"{stage:<22}{workers:>8}{rate:>10.1f}{steady:>10.1f}{steady / single:>12.2f}x")
    return 0


if __name__ == "__main__":
    run_benchmark(main)
