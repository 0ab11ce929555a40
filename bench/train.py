"""Benchmark: train.py's Lightning loop against a bare PyTorch loop, in one run, on the same data.

    uv run python -m bench.train                                   # config defaults (batch 256)
    uv run python -m bench.train --batch-size 16 --steps 8 --images 256 --num-workers 2   # a CPU-sized run

Both loops train the same model (same batch size, precision and data loader) on pre-cropped JPEGs
(synthetic ones written to a temporary folder unless --train-dir/--train-csv name real ones). It
prints images/s of each, their ratio (Lightning overhead; goal under 5%), the share of step time
spent waiting for the next batch (goal under 10% with the configured workers) and the peak memory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from PIL import Image

from bench.cli import benchmark_parser, run_benchmark, write_figures
from config import Config, add_config_arguments, parse_config
from face_match_age.device import DeviceChoice, choose_device
from face_match_age.network.age_network import age_kl_loss
from loader import FaceAgeDataModule
from model import build_age_model
from train import build_trainer

WARMUP_STEPS = 2  # first steps pay for allocation, cuDNN autotuning and worker start-up
EXAMPLES = (
    "uv run python -m bench.train                                   # config defaults (batch 256)",
    "uv run python -m bench.train --batch-size 16 --steps 8 --images 256 --num-workers 2   # a CPU-sized run",
)


def write_synthetic_faces(folder: Path, count: int, size: int) -> Path:
    """`count` noisy size x size JPEGs and a labels CSV; returns the CSV path."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for number in range(count):
        name = f"face_{number:05d}.jpg"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / name, quality=90)
        rows.append({"name": name, "age": int(rng.integers(0, 101))})
    csv_path = folder.parent / "labels.csv"
    pd.DataFrame(rows).to_csv(csv_path, index=False)
    return csv_path


def _sync(choice: DeviceChoice) -> None:
    if choice.accelerator == "cuda":
        torch.cuda.synchronize()


class _StepClock(L.Callback):
    """Times the measured steps of the Lightning loop, and the gaps in which it waits for data."""

    def __init__(self, choice: DeviceChoice, steps: int) -> None:
        self.choice, self.steps = choice, steps
        self.start = self.end = None
        self.wait_s, self._last_end = 0.0, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == WARMUP_STEPS:
            _sync(self.choice)
            self.start = time.perf_counter()
        elif batch_idx > WARMUP_STEPS and self._last_end is not None:
            self.wait_s += time.perf_counter() - self._last_end

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if WARMUP_STEPS <= batch_idx < WARMUP_STEPS + self.steps:
            _sync(self.choice)
            self._last_end = self.end = time.perf_counter()


def lightning_loop(config: Config, choice: DeviceChoice, steps: int) -> tuple[float, float]:
    """(images per second, share of time waiting for data) of train.py's Trainer."""
    clock = _StepClock(choice, steps)
    trainer = build_trainer(config, choice, extra_callbacks=(clock,))[0]  # the Trainer; the rest are its callbacks
    trainer.fit(build_age_model(config), datamodule=FaceAgeDataModule(config, choice.accelerator == "cuda"))
    elapsed = clock.end - clock.start
    return steps * config.batch_size / elapsed, clock.wait_s / elapsed


def bare_loop(config: Config, choice: DeviceChoice, steps: int) -> tuple[float, float]:
    """(images per second, share of time waiting for data) of a plain PyTorch loop on the same model and data."""
    module = FaceAgeDataModule(config, choice.accelerator == "cuda")
    module.setup("fit")
    model = build_age_model(config).to(choice.device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    autocast = _autocast(choice)
    scaler = torch.amp.GradScaler(enabled=choice.precision == "16")
    batches = iter(module.train_dataloader())
    wait_s, start = 0.0, None
    for step in range(WARMUP_STEPS + steps):
        if step == WARMUP_STEPS:
            _sync(choice)
            start, wait_s = time.perf_counter(), 0.0
        fetch_start = time.perf_counter()
        faces, ages, _ = next(batches)
        faces, ages = faces.to(choice.device, non_blocking=True), ages.to(choice.device, non_blocking=True)
        wait_s += time.perf_counter() - fetch_start
        with autocast:
            loss = age_kl_loss(model(faces), ages, config.label_sigma)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    _sync(choice)
    elapsed = time.perf_counter() - start
    return steps * config.batch_size / elapsed, wait_s / elapsed


def _autocast(choice: DeviceChoice):
    dtypes = {"bf16": torch.bfloat16, "16": torch.float16}
    if choice.precision not in dtypes:
        return contextlib.nullcontext()
    return torch.autocast(choice.accelerator, dtype=dtypes[choice.precision])


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser("python -m bench.train", __doc__, EXAMPLES)
    add_config_arguments(
        parser,
        ["batch_size", "num_workers", "img_size", "device", "precision", "pretrained", "train_dir", "train_csv"],
    )
    parser.group("benchmark").add_argument(
        "--steps", type=int, default=20, help="measured steps per loop, after the warm-up"
    )
    parser.group("data").add_argument(
        "--images",
        type=int,
        default=0,
        help="synthetic images to write (default: enough for the run); ignored with --train-dir",
    )
    parser.group("benchmark").add_argument(
        "--json", type=Path, help="also write the figures to this JSON file (for bench.gpu)"
    )
    # Random weights by default: speed does not depend on their values, and they need no download.
    parser.set_defaults(pretrained="none")
    args, config = parse_config(parser, argv)
    figures = measure_training(config, args.steps, args.images, given_data="train_dir" in args.given)
    print(
        f"\n{figures.device}; batch {config.batch_size}, {config.num_workers} workers, "
        f"{config.img_size}px, {args.steps} measured steps after {WARMUP_STEPS} warm-up"
    )
    print(f"{'loop':<12}{'images/s':>10}{'data wait':>12}")
    print(f"{'bare torch':<12}{figures.bare_images_per_s:>10.1f}{figures.bare_data_wait:>11.1%}")
    print(f"{'lightning':<12}{figures.lightning_images_per_s:>10.1f}{figures.lightning_data_wait:>11.1%}")
    ratio = figures.lightning_images_per_s / figures.bare_images_per_s
    print(f"lightning / bare throughput: {ratio:.3f} (overhead {1 - ratio:+.1%}; goal under 5%)")
    print(f"peak memory (MB): {figures.peak_memory_mb:.0f} ({figures.memory_kind})")
    write_figures(args.json, figures)
    return 0


@dataclasses.dataclass(frozen=True)
class TrainingFigures:
    device: str  # DeviceChoice.describe(): accelerator, precision and why
    precision: str
    batch_size: int
    steps: int
    bare_images_per_s: float
    bare_data_wait: float  # share of step time spent waiting for the next batch
    lightning_images_per_s: float
    lightning_data_wait: float
    peak_memory_mb: float
    memory_kind: str


def measure_training(config: Config, steps: int, images: int = 0, given_data: bool = False) -> TrainingFigures:
    """The figures main() prints (and bench.gpu tabulates): both loops on `config`'s data, or on `images`
    synthetic crops (at least enough for the run) in a temporary folder unless `given_data`."""
    needed = (WARMUP_STEPS + steps + 1) * config.batch_size
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        if not given_data:
            csv_path = write_synthetic_faces(scratch / "faces", max(images, needed), config.img_size)
            config = config.replace(train_dir=scratch / "faces", train_csv=csv_path)
        config = config.replace(
            val_dir=config.train_dir,
            val_csv=config.train_csv,
            limit_val_batches="1",
            max_epochs=1,
            checkpoint_dir=scratch / "ckpt",
            log_dir=scratch / "logs" / "bench",
            logged_sample_faces=1,
            figure_sample_size=1,
        )
        choice = choose_device(config.device, config.precision)
        L.seed_everything(config.seed, verbose=False)
        bare_rate, bare_wait = bare_loop(config, choice, steps)
        lightning_rate, lightning_wait = lightning_loop(config, choice, steps)
    return TrainingFigures(
        choice.describe(), choice.precision, config.batch_size, steps, bare_rate, bare_wait,
        lightning_rate, lightning_wait, peak_memory_mb(choice), _memory_kind(choice),
    )  # fmt: skip


def peak_memory_mb(choice: DeviceChoice) -> float:
    """The most memory the run held: on CUDA, what torch allocated on the GPU; elsewhere, the process's
    maximum resident set size (Linux reports it in KB)."""
    if choice.accelerator == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _memory_kind(choice: DeviceChoice) -> str:
    return "GPU memory allocated by torch" if choice.accelerator == "cuda" else "process resident set, both loops"


if __name__ == "__main__":
    run_benchmark(main)
