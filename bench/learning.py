"""Benchmark: does train.py learn from the first epoch on your own photos? Each epoch's validation MAE
beside the baseline of guessing the training median age, their ratio, and the training images/s.

    uv run python -m bench.learning --data-dir data/MINE --max-epochs 3 --batch-size 32 --pretrained none
    uv run python -m bench.learning --data-dir data/MINE --max-epochs 3 --head-lr 1e-4   # the seed's head rate
    uv run python -m bench.learning --data-dir data/MINE --max-epochs 3 --batch-size 16 --pretrained none \
        --learning-rate 1e-3 --lr-schedule cosine --warmup-steps 10   # from random weights

It runs train.py's training (train.train) on the prepared folder and CSVs given (data_prep.py's layout),
with every train.py option that changes what is learned; checkpoints and logs go to a temporary folder
unless --ckpt-dir and --log-dir are given. A ratio below 1 means the model beat guessing; the goal on a
small set (~1,000 photos) is a ratio below 1 after the first epoch, falling in the next ones. The images/s
count the training steps with their data loading, not the validation.
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import lightning as L

from bench.cli import benchmark_parser, run_benchmark, write_figures
from config import add_config_arguments, parse_config

EXAMPLES = (
    "uv run python -m bench.learning --data-dir data/MINE --max-epochs 3 --batch-size 32 --pretrained none",
    "uv run python -m bench.learning --data-dir data/MINE --max-epochs 3 --head-lr 1e-4   # the seed's head rate",
    (
        "uv run python -m bench.learning --data-dir data/MINE --max-epochs 3 --batch-size 16 --pretrained none "
        "--learning-rate 1e-3 --lr-schedule cosine --warmup-steps 10   # from random weights"
    ),
)
OPTIONS = (
    "dataset_dir", "train_dir", "val_dir", "train_csv", "val_csv", "pretrained", "batch_size", "max_epochs",
    "learning_rate", "head_learning_rate", "warmup_steps", "lr_schedule", "label_sigma", "freeze_backbone_epochs",
    "num_workers", "img_size", "limit_train_batches", "limit_val_batches", "seed", "device", "precision",
    "checkpoint_dir", "log_dir",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class EpochFigures:
    epoch: int
    val_mae: float
    baseline_mae: float
    ratio: float  # val_mae / baseline_mae: below 1, the model beats guessing
    images_per_s: float  # training steps with their data loading


class EpochClock(L.Callback):
    """Times each epoch's training part (first batch asked for to the start of validation) and reads its
    validation MAE and baseline once validation ends."""

    def __init__(self) -> None:
        self.epochs: list[EpochFigures] = []
        self._start, self._images, self._seconds = 0.0, 0, 0.0

    def on_train_epoch_start(self, trainer, pl_module):
        self._start, self._images = time.perf_counter(), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._images += len(batch[1])

    def on_validation_start(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self._seconds = time.perf_counter() - self._start

    def on_validation_epoch_end(self, trainer, pl_module):
        metrics = trainer.callback_metrics
        if trainer.sanity_checking or "val/mae" not in metrics:
            return
        mae, baseline = float(metrics["val/mae"]), float(metrics["val/mae_baseline"])
        figures = EpochFigures(
            trainer.current_epoch, mae, baseline, mae / baseline, self._images / max(self._seconds, 1e-9)
        )
        self.epochs.append(figures)
        print(_row(figures), flush=True)


HEADER = f"{'epoch':>5}{'val MAE':>10}{'baseline':>10}{'ratio':>8}{'images/s':>10}"


def _row(figures: EpochFigures) -> str:
    return (
        f"{figures.epoch:>5}{figures.val_mae:>10.2f}{figures.baseline_mae:>10.2f}{figures.ratio:>8.3f}"
        f"{figures.images_per_s:>10.1f}"
    )


def main(argv: list[str] | None = None) -> int:
    import train  # late: --help answers without importing Lightning's training stack

    parser = benchmark_parser("python -m bench.learning", __doc__, EXAMPLES)
    add_config_arguments(parser, OPTIONS)
    parser.group("benchmark").add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.set_defaults(max_epochs=3)  # a benchmark's few epochs
    args, config = parse_config(parser, argv)
    config = config.replace(patience=1000)  # every epoch measured: none stopped early
    clock = EpochClock()
    with tempfile.TemporaryDirectory() as scratch:
        outputs = {
            name: Path(scratch) / name for name in ("checkpoint_dir", "log_dir") if name not in args.given
        }  # a benchmark leaves nothing behind unless told where
        config = config.replace(**outputs)
        print(HEADER, flush=True)
        try:
            train.train(config, (clock,), progress_bar=False)
        except train.TrainingStopped as stop:  # a scheduler's SIGTERM or Ctrl-C: the epochs done still count
            print(f"{stop}; the figures of the epochs it finished:", file=sys.stderr)
            code = stop.exit_code
        else:
            code = 0
    print(f"\n{HEADER}\n" + "\n".join(_row(figures) for figures in clock.epochs))
    write_figures(args.json, Figures(clock.epochs))
    return code


@dataclasses.dataclass(frozen=True)
class Figures:
    epochs: list[EpochFigures]


if __name__ == "__main__":
    run_benchmark(main)
