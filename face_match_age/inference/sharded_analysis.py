"""infer.py --devices N: the photos of a --pairs batch or a --folder run analysed by N processes (one per GPU,
or CPU processes), each with its own copy of the models (sharding.py shares the work out)."""

from __future__ import annotations

import functools
import os
from collections.abc import Generator
from pathlib import Path

import torch

from face_match_age.inference.analyzer import PhotoAnalysis
from face_match_age.network.age_network import CheckpointError
from face_match_age.network.weights import PretrainedWeightsError
from face_match_age.sharding import sharded


def analyses_sharded(
    world: int, device: str, all_faces: bool, make_analyzer, photos: list[Path]
) -> Generator[PhotoAnalysis, None, None]:
    """The analyses of `photos` from `world` processes (one per GPU, or CPU processes), each holding its own
    models and every world-th photo; they arrive in the order they finish. Closing the iterator stops them.
    A model that cannot be loaded, or a device out of memory, ends the run as it would with --devices 1."""
    return sharded(
        world,
        functools.partial(_analyze_share, device, all_faces, make_analyzer),
        photos,
        (CheckpointError, PretrainedWeightsError, torch.OutOfMemoryError),
        "a batch worker process died (exit code {exit_code}); rerun with --devices 1 to see its error",
    )


def _analyze_share(
    device: str, all_faces: bool, make_analyzer, rank: int, world: int, photos: list[Path]
) -> Generator[PhotoAnalysis, None, None]:
    """One worker's part of analyses_sharded: its own models on its own device, and its photos."""
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    analyzer = make_analyzer(device=_device_for(rank, world, device))
    for analysis in analyzer.analyze_many(photos, all_faces=all_faces, names=[str(p) for p in photos]):
        analysis.worker_rank = rank
        yield analysis


def _device_for(rank: int, world: int, requested: str) -> str:
    if requested == "cuda" or (requested == "auto" and torch.cuda.device_count() >= world):
        return f"cuda:{rank}"
    return requested
