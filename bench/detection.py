"""Benchmark: MTCNN photos/s photo by photo, in same-size batches (as before) and in size buckets, in one run.

    uv run python -m bench.detection                 # 48 photos of each collection
    uv run python -m bench.detection --photos 200 --device cuda

Two collections made from scikit-image's astronaut: IMDB-like (crops rescaled to varied sizes and aspect ratios)
and CACD-like (every photo 250x250). Each way detects the photos in chunks as infer.py and data_prep.py do:
photo by photo (MTCNN.detect on each), same-size batches (MTCNN.detect on the photos of one size: the toolkit's
batching before size buckets) and size buckets of each --bucket-sides (batched_mtcnn.detect_boxes). Prints
photos/s as ratios to photo by photo in the same run, the first network's (PNet's) calls per chunk and, for
buckets, its padding: the pixels it searches over the pixels of the photos' own pyramid levels (1.00: none).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from bench.cli import benchmark_parser, run_benchmark, write_figures

EXAMPLES = (
    "uv run python -m bench.detection                 # 48 photos of each collection",
    "uv run python -m bench.detection --photos 200 --device cuda",
    "uv run python -m bench.detection --bucket-sides 8,16,32,64,128",
)
CACD_SIDE = 250  # CACD's photos are all 250x250


def chunks(photos: list, size: int) -> list[list]:
    return [photos[start : start + size] for start in range(0, len(photos), size)]


def photo_by_photo(detector, chunk) -> None:
    for photo in chunk:
        detector.detect(photo)


def same_size_batches(detector, chunk) -> None:
    by_size: dict = {}
    for photo in chunk:
        by_size.setdefault(photo.size, []).append(photo)
    for photos in by_size.values():
        detector.detect(photos)


def size_buckets_of(side: int):
    from face_match_age.detection.batched_mtcnn import detect_boxes

    return lambda detector, chunk: detect_boxes(detector, chunk, side)


def padding(photos, chunk_size: int, side: int, config, factor: float) -> float:
    """Pixels the first network searches in size buckets of `side` over those of the photos' own levels
    (batched_mtcnn's grouping, level by level)."""
    from face_match_age.detection.batched_mtcnn import pyramid_scales, size_buckets

    searched = own = 0
    for chunk in chunks(photos, chunk_size):
        pyramids = [pyramid_scales(p.height, p.width, config.mtcnn_min_face_size, factor) for p in chunk]
        for level in range(max(map(len, pyramids))):
            sizes = [
                (int(p.width * s[level] + 1), int(p.height * s[level] + 1))
                for p, s in zip(chunk, pyramids)
                if len(s) > level
            ]
            for bucket in size_buckets(sizes, side):
                own += sum(sizes[i][0] * sizes[i][1] for i in bucket)
                searched += len(bucket) * max(sizes[i][0] for i in bucket) * max(sizes[i][1] for i in bucket)
    return searched / own


def rates(ways, detector, photos, chunk_size: int, repeats: int) -> list[tuple[float, float]]:
    """(photos/s of the fastest of `repeats` passes; first-network calls per chunk) of each way. The ways take turns
    in each pass, so a change in the machine's load falls on all of them, and the fastest pass is the one least
    slowed by other processes."""
    calls = [0]
    hook = detector.pnet.conv1.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    samples, calls_per_chunk = [[] for _ in ways], [0.0 for _ in ways]
    try:
        for _ in range(repeats):
            for number, way in enumerate(ways):
                calls[0], start = 0, time.perf_counter()
                for chunk in chunks(photos, chunk_size):
                    way(detector, chunk)
                samples[number].append(time.perf_counter() - start)
                calls_per_chunk[number] = calls[0] / len(chunks(photos, chunk_size))
    finally:
        hook.remove()
    return [(len(photos) / min(times), count) for times, count in zip(samples, calls_per_chunk)]


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser("python -m bench.detection", __doc__, EXAMPLES)
    parser.group("data").add_argument("--photos", type=int, default=48, help="photos in each collection")
    parser.group("hardware").add_argument("--device", default="cpu", help="cpu, cuda...: where MTCNN runs")
    benchmark = parser.group("benchmark")
    benchmark.add_argument("--chunk", type=int, default=16, help="photos detected together, as infer.py's chunks")
    benchmark.add_argument(
        "--bucket-sides", default="32,128,512", help="bucket sides to compare, in pixels of each pyramid level"
    )
    benchmark.add_argument("--repeats", type=int, default=3, help="passes over each collection; the fastest is shown")
    benchmark.add_argument("--json", type=Path, help="also write the figures to this JSON file (for bench.gpu)")
    args = parser.parse_args(argv)
    sides = tuple(map(int, args.bucket_sides.split(",")))
    figures = measure_detection(args.photos, args.device, args.chunk, sides, args.repeats)
    print(f"\ndevice {args.device}; chunks of {args.chunk} photos; fastest of {args.repeats} passes")
    print(f"{'collection':<11}{'way':<20}{'photos/s':>9}{'ratio':>7}{'PNet calls/chunk':>18}{'padding':>9}")
    for row in figures.rows:
        pad = "" if row.padding is None else f"{row.padding:.2f}"
        print(
            f"{row.collection:<11}{row.way:<20}{row.photos_per_s:>9.1f}{row.ratio:>7.2f}"
            f"{row.pnet_calls_per_chunk:>18.1f}{pad:>9}"
        )
    write_figures(args.json, figures)
    return 0


@dataclasses.dataclass(frozen=True)
class DetectionRow:
    collection: str
    way: str
    photos_per_s: float
    ratio: float  # to photo by photo on the same collection
    pnet_calls_per_chunk: float
    padding: float | None  # size buckets only


@dataclasses.dataclass(frozen=True)
class DetectionFigures:
    device: str
    chunk: int
    repeats: int
    rows: list[DetectionRow]


def measure_detection(
    photo_count: int, device: str, chunk: int, bucket_sides: tuple[int, ...], repeats: int
) -> DetectionFigures:
    """The figures main() prints (and bench.gpu tabulates)."""
    import torch

    from bench.photos import FACE_CROP, astronaut_photos_of_varied_sizes, astronaut_variants
    from config import Config
    from face_match_age.detection.faces import build_face_detector

    config = Config()
    detector = build_face_detector(config, device)
    ways = [("photo by photo", photo_by_photo, None), ("same-size batches", same_size_batches, None)]
    ways += [(f"buckets of {side} px", size_buckets_of(side), side) for side in bucket_sides]
    collections = {
        "IMDB-like": astronaut_photos_of_varied_sizes(photo_count),
        "CACD-like": list(astronaut_variants(photo_count, FACE_CROP, (CACD_SIDE,))),
    }
    rows = []
    with torch.inference_mode():
        photo_by_photo(detector, collections["CACD-like"][:2])  # warm-up: first calls allocate
        for name, photos in collections.items():
            measured = rates([way for _, way, _ in ways], detector, photos, chunk, repeats)
            for (label, _, side), (photos_per_s, calls) in zip(ways, measured):
                pad = None if side is None else padding(photos, chunk, side, config, detector.factor)
                rows.append(DetectionRow(name, label, photos_per_s, photos_per_s / measured[0][0], calls, pad))
    return DetectionFigures(device, chunk, repeats, rows)


if __name__ == "__main__":
    run_benchmark(main)
