"""Train the age model.

    uv run python train.py                                  # data/IMDB from data_prep.py, config defaults
    uv run python train.py --ckpt checkpoints/last.ckpt     # resume where a run stopped
    uv run python train.py --devices 4 --strategy ddp       # several GPUs (add --num-nodes for machines)

Writes <ckpt-dir>/best.ckpt (lowest validation MAE) and <ckpt-dir>/last.ckpt, TensorBoard logs under
<log-dir>, and the resolved config.json beside both.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback, EarlyStopping, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from callbacks import RandomStateCheckpoint, RunRecord, ValidationPredictionImages
from config import Config, ConfigArgumentParser, add_config_arguments, batch_limit, parse_config
from device import DeviceChoice, choose_device
from loader import FaceAgeDataModule, LabelsError
from model import backbone_freezing, build_age_model
from weights import PretrainedWeightsError

TRAIN_OPTIONS = (
    "train_dir", "val_dir", "train_csv", "val_csv", "batch_size", "max_epochs", "learning_rate", "patience",
    "label_sigma", "pretrained", "freeze_backbone_epochs", "num_workers", "accelerator", "devices", "num_nodes",
    "strategy", "precision", "resume_checkpoint", "checkpoint_dir", "log_dir", "limit_train_batches",
    "limit_val_batches", "seed", "log_every_n_steps", "img_size",
)
MONITOR = "val/mae"  # what "best" means: lowest mean absolute error in years on the validation set


class TrainingSetupError(RuntimeError):
    """Something to fix before training can start (missing data, bad resume path...)."""


@dataclass(frozen=True)
class TrainingResult:
    best_checkpoint: Path
    last_checkpoint: Path
    best_epoch: int | None
    best_val_mae: float | None
    log_dir: Path


def check_inputs(config: Config) -> None:
    """Fail early, with what to do, when the data or the resume checkpoint is missing."""
    missing = [f"{name} {path}" for name, path in (
        ("training images", config.train_dir), ("validation images", config.val_dir),
        ("training labels", config.train_csv), ("validation labels", config.val_csv)) if not Path(path).exists()]
    if missing:
        raise TrainingSetupError(
            "cannot find the dataset: " + "; ".join(missing) + ".\nRun `uv run python data_prep.py` to download "
            "and prepare it, or point --train-dir, --val-dir, --train-csv and --val-csv at your own folders and CSVs.")
    if config.resume_checkpoint is not None and not Path(config.resume_checkpoint).is_file():
        raise TrainingSetupError(f"cannot resume: no checkpoint at {config.resume_checkpoint}")


def build_trainer(config: Config, choice: DeviceChoice,
                  extra_callbacks: tuple[Callback, ...] = ()) -> tuple[L.Trainer, RunRecord]:
    logger = TensorBoardLogger(save_dir=str(config.log_dir.parent), name=config.log_dir.name,
                               default_hp_metric=True)  # hp_metric: best val MAE, set by RunRecord
    best = ModelCheckpoint(dirpath=config.checkpoint_dir, filename="best", monitor=MONITOR, mode="min",
                           save_top_k=1, save_last=True, auto_insert_metric_name=False,
                           enable_version_counter=False)  # stable names: best.ckpt and last.ckpt
    record = RunRecord(config, "train.py", MONITOR)
    callbacks: list[Callback] = [
        best,
        EarlyStopping(monitor=MONITOR, mode="min", patience=config.patience),
        LearningRateMonitor(logging_interval="epoch"),
        ValidationPredictionImages(config.logged_sample_faces, config.figure_sample_size),
        RandomStateCheckpoint(),
        record,
        *extra_callbacks,
    ]
    freezing = backbone_freezing(config.freeze_backbone_epochs)
    if freezing is not None:
        callbacks.append(freezing)
    devices = int(config.devices) if config.devices.isdigit() else config.devices
    trainer = L.Trainer(
        accelerator=choice.accelerator, precision=choice.precision, devices=devices, num_nodes=config.num_nodes,
        strategy=config.strategy, max_epochs=config.max_epochs, logger=logger, callbacks=callbacks,
        limit_train_batches=batch_limit(config.limit_train_batches),
        limit_val_batches=batch_limit(config.limit_val_batches),
        log_every_n_steps=config.log_every_n_steps,
    )
    if trainer.is_global_zero:
        print(f"Training on {choice.describe()}")
    return trainer, record


def train(config: Config, extra_callbacks: tuple[Callback, ...] = ()) -> TrainingResult:
    """Train (or resume) the age model as `config` says; the Python API behind `python train.py`."""
    check_inputs(config)
    L.seed_everything(config.seed, workers=True, verbose=False)
    choice = choose_device(config.accelerator, config.precision)
    trainer, record = build_trainer(config, choice, extra_callbacks)
    datamodule = FaceAgeDataModule(config, pin_memory=choice.accelerator == "cuda")
    model = build_age_model(config)
    trainer.fit(model, datamodule=datamodule,
                ckpt_path=str(config.resume_checkpoint) if config.resume_checkpoint else None)
    return TrainingResult(config.checkpoint_dir / "best.ckpt", config.checkpoint_dir / "last.ckpt",
                          record.best_epoch, record.best, Path(trainer.logger.log_dir))


def build_parser() -> ConfigArgumentParser:
    parser = ConfigArgumentParser(description="Train the age model (Lightning).")
    add_config_arguments(parser, TRAIN_OPTIONS)
    return parser


def main(argv: list[str] | None = None, extra_callbacks: tuple[Callback, ...] = ()) -> int:
    _, config = parse_config(build_parser(), argv)
    try:
        result = train(config, extra_callbacks)
    except (TrainingSetupError, LabelsError, PretrainedWeightsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    _report(result, config)
    return 0


@rank_zero_only
def _report(result: TrainingResult, config: Config) -> None:
    if result.best_val_mae is None:
        print("No validation MAE was recorded, so there is no best checkpoint (was --limit-val-batches 0?)")
        return
    print(f"Best checkpoint: {result.best_checkpoint} (epoch {result.best_epoch}, "
          f"validation MAE {result.best_val_mae:.2f} years)\nLast checkpoint: {result.last_checkpoint}\n"
          f"TensorBoard: tensorboard --logdir {config.log_dir}")


if __name__ == "__main__":
    sys.exit(main())
