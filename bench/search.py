"""Benchmark: the folder search's cost against size, on synthetic 512-d unit embeddings.

    uv run python -m bench.search                        # N = 1,000, 10,000 and 100,000
    uv run python -m bench.search --sizes 500,1000 --block 1024

1% of the rows get a noisy copy (cosine ~0.9) planted among random unit vectors; each size is searched
for all pairs above the threshold (similarity_search.threshold_pairs) in a fresh process, which prints
the search time, the peak memory the search added (the growth of the process's maximum resident set
size, resource.getrusage, from after loading the embeddings to after the search; the embeddings'
own N x 2 KB come on top), the growth exponent of the time between sizes (2 for all-pairs work) and
how many planted copies were found. Goals: 100,000 searched in under 2 minutes on 2 CPU cores, every
planted copy found.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench.cli import BENCHMARK_EXIT_CODES, run_benchmark, run_with_deadline
from config import ConfigArgumentParser, help_epilog, text_type

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = (
    "uv run python -m bench.search                        # N = 1,000, 10,000 and 100,000",
    "uv run python -m bench.search --sizes 500,1000 --block 1024",
)
PLANTED_COSINE = 0.9
SEARCH_DEADLINE_S = 3600  # 100,000 embeddings take about a minute on a CPU: only a search that hangs reaches it
PLANTED_SHARE = 0.01


def write_planted(path: Path, size: int, seed: int = 0) -> int:
    """`size` unit vectors saved to `path`, the last 1% noisy copies of the first 1%; returns how many."""
    rng = np.random.default_rng(seed)
    planted = max(1, int(size * PLANTED_SHARE))
    vectors = rng.standard_normal((size, 512), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    # A copy at cosine ~PLANTED_COSINE: the original turned towards an independent random unit vector.
    noise = vectors[size - planted :]
    vectors[size - planted :] = PLANTED_COSINE * vectors[:planted] + math.sqrt(1 - PLANTED_COSINE**2) * noise
    vectors[size - planted :] /= np.linalg.norm(vectors[size - planted :], axis=1, keepdims=True)
    np.save(path, vectors)
    return planted


def measure(path: str, planted: int, threshold: float, block: int) -> None:
    """Run in a fresh process per size: search the saved embeddings and print one JSON line of figures."""
    import resource
    import time

    from face_match_age.inference.similarity_search import threshold_pairs

    embeddings = np.load(path)
    threshold_pairs(embeddings[:2], threshold, block=block)  # torch's one-off start-up, not the search
    before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    found = threshold_pairs(embeddings, threshold, block=block)
    seconds = time.perf_counter() - start
    after_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    size = len(embeddings)
    pairs = set(zip(found.first.tolist(), found.second.tolist(), strict=True))
    found_planted = sum((i, size - planted + i) in pairs for i in range(planted))
    figures = {"seconds": seconds, "added_mb": (after_kb - before_kb) / 1024, "peak_mb": after_kb / 1024}
    print(json.dumps(figures | {"found": found_planted, "planted": planted, "matches": len(found.first)}))


def measure_in_fresh_process(path: Path, planted: int, threshold: float, block: int) -> dict:
    code = f"from bench.search import measure; measure({str(path)!r}, {planted}, {threshold!r}, {block})"
    command = [sys.executable, "-c", code]
    what = f"the search of {path.name}"
    done = run_with_deadline(command, what, SEARCH_DEADLINE_S, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the search of {path.name} failed:\n{done.stderr.strip()}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def sizes(text: str) -> list[int]:
    """--sizes' text as counts: "500,1_000" -> [500, 1000]."""
    return [int(size.replace("_", "")) for size in text.split(",")]


def main(argv: list[str] | None = None) -> int:
    from face_match_age.inference.similarity_search import DEFAULT_BLOCK

    parser = ConfigArgumentParser(
        prog="python -m bench.search",
        description=__doc__.split("\n\n")[0],
        epilog=help_epilog(EXAMPLES, BENCHMARK_EXIT_CODES),
    )
    parser.group("data").add_argument(
        "--sizes", type=text_type(sizes), default=[1_000, 10_000, 100_000], help="embedding counts, comma-separated"
    )
    parser.group("benchmark").add_argument("--block", type=int, default=DEFAULT_BLOCK, help="rows per tile side")
    parser.group("benchmark").add_argument(
        "--threshold", type=float, default=0.5, help="match above this cosine similarity"
    )
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for size in args.sizes:
            path = Path(scratch) / f"embeddings_{size}.npy"
            planted = write_planted(path, size)
            rows.append((size, measure_in_fresh_process(path, planted, args.threshold, args.block)))
            path.unlink()
    print_table(rows, args.block, args.threshold)
    return 0


def print_table(rows: list[tuple[int, dict]], block: int, threshold: float) -> None:
    print(f"\nthreshold {threshold}, tiles {block} x {block}; memory: growth of max RSS (getrusage) during the search")
    print(f"{'N':>9}{'search s':>10}{'added MB':>10}{'peak MB':>9}{'exponent':>10}{'planted found':>15}{'matches':>9}")
    for index, (size, figures) in enumerate(rows):
        exponent = "-"
        if index:
            previous_size, previous = rows[index - 1]
            exponent = f"{math.log(figures['seconds'] / previous['seconds']) / math.log(size / previous_size):.2f}"
        found = f"{figures['found']}/{figures['planted']}"
        print(
            f"{size:>9}{figures['seconds']:>10.2f}{figures['added_mb']:>10.0f}{figures['peak_mb']:>9.0f}"
            f"{exponent:>10}{found:>15}{figures['matches']:>9}"
        )


if __name__ == "__main__":
    run_benchmark(main)
