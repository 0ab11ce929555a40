"""Train the age model (Lightning).

Writes <ckpt-dir>/best.ckpt (lowest validation MAE: the model to use, its weights, hyper-parameters and what
using it needs, without optimizer state) and <ckpt-dir>/last.ckpt (everything to resume from the latest point
reached: every epoch end, every --checkpoint-every-n-steps steps, and on SIGTERM or Ctrl-C), TensorBoard logs
under <log-dir>, and the resolved config.json beside both. Checkpoints are written atomically: a crash never
leaves half a file.
"""

from __future__ import annotations

import shlex
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

# No torch or Lightning here: --help, a bad option and missing data are answered before those are imported
# (seconds on a cold start); the functions that need them import them.
from config import (
    Config,
    ConfigArgumentParser,
    add_config_arguments,
    add_refused_option,
    batch_limit,
    devices_value,
    help_epilog,
    parse_config,
    settings_that_change,
)
from face_match_age.error_messages import out_of_memory_message, print_error
from face_match_age.exit_codes import ExitCode
from face_match_age.files.output_files import OutputError, disk_full_message, is_disk_full

if TYPE_CHECKING:
    import lightning as L
    from lightning.pytorch.callbacks import Callback

    from callbacks import LastCheckpoint, RunRecord, StopOnSignal
    from face_match_age.device import DeviceChoice
    from face_match_age.training.baselines import GuessingBaseline

TRAIN_OPTIONS = (
    "dataset_dir",
    "train_dir",
    "val_dir",
    "train_csv",
    "val_csv",
    "batch_size",
    "max_epochs",
    "learning_rate",
    "head_learning_rate",
    "warmup_steps",
    "lr_schedule",
    "patience",
    "label_sigma",
    "pretrained",
    "head_hidden_dim",
    "head_dropout",
    "freeze_backbone_epochs",
    "num_workers",
    "device",
    "devices",
    "num_nodes",
    "strategy",
    "precision",
    "resume_checkpoint",
    "checkpoint_dir",
    "log_dir",
    "limit_train_batches",
    "limit_val_batches",
    "seed",
    "log_every_n_steps",
    "logged_sample_faces",
    "figure_sample_size",
    "img_size",
    "checkpoint_every_n_steps",
)
MONITOR = "val/mae"  # what "best" means: lowest mean absolute error in years on the validation set


class TrainingSetupError(RuntimeError):
    """Something to fix before training can start (missing data, bad resume path...); `exit_code` says which
    kind of failure it is (face_match_age.exit_codes)."""

    def __init__(self, message: str, exit_code: ExitCode = ExitCode.INPUT) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class TrainingDataError(RuntimeError):
    """Training met data it cannot use (an unreadable image) or could not write a checkpoint; the message says
    which and how to go on."""

    def __init__(self, message: str, exit_code: ExitCode = ExitCode.INPUT) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class TrainingStopped(RuntimeError):
    """SIGTERM or SIGINT stopped training. `checkpoint`: what to resume from (None: nothing to resume yet);
    `saved_now`: whether it was written on this stop, so that nothing was lost."""

    def __init__(
        self, signal_name: str, checkpoint: Path | None, saved_now: bool, epoch: int, global_step: int
    ) -> None:
        super().__init__(f"stopped by {signal_name} in epoch {epoch} at step {global_step}")
        self.signal_name, self.checkpoint, self.saved_now = signal_name, checkpoint, saved_now
        self.epoch, self.global_step = epoch, global_step

    @property
    def exit_code(self) -> int:
        """What a shell reports for a process ended by this signal (143 for SIGTERM, 130 for SIGINT)."""
        return 128 + signal.Signals[self.signal_name].value


@dataclass(frozen=True)
class TrainingResult:
    best_checkpoint: Path
    last_checkpoint: Path
    best_epoch: int | None
    best_val_mae: float | None
    log_dir: Path
    baseline: GuessingBaseline  # what guessing without the faces scores on the same validation set


def check_inputs(config: Config) -> None:
    """Fail early, with what to do, when the data is missing or the resume checkpoint missing or damaged."""
    check_data(config)
    if config.checkpoint_every_n_steps < 0:
        raise TrainingSetupError(
            f"checkpoint_every_n_steps cannot be negative, got {config.checkpoint_every_n_steps}", ExitCode.USAGE
        )
    if config.resume_checkpoint is not None:
        from face_match_age.files.checkpoint_files import checkpoint_damage, damaged_message, starts_like_zip

        if not Path(config.resume_checkpoint).is_file():
            raise TrainingSetupError(f"cannot resume: no checkpoint at {config.resume_checkpoint}", ExitCode.MODEL)
        checkpoint = Path(config.resume_checkpoint)
        # Found now rather than by Lightning deep inside fit, after the data and the model are set up.
        damage = checkpoint_damage(checkpoint)
        # What an intact file is; and a file in torch's older, non-zip format, which checkpoint_damage cannot
        # check, is named for what it holds when torch loads it (older weight files), else called damaged.
        unusable = resume_problem(checkpoint, config) if damage is None or not starts_like_zip(checkpoint) else None
        if unusable is not None:
            raise TrainingSetupError(f"cannot resume from {checkpoint}: {unusable}", ExitCode.MODEL)
        if damage is not None:
            raise TrainingSetupError(
                "cannot resume: "
                + damaged_message(
                    config.resume_checkpoint,
                    damage,
                    "Resume from another checkpoint (best.ckpt or last.ckpt of the "
                    "same run) or start again without --resume",
                ),
                ExitCode.MODEL,
            )


def check_data(config: Config) -> None:
    """TrainingSetupError naming the dataset's folders and CSVs that do not exist; needs no torch, so that
    main says it before importing torch and Lightning."""
    missing = [
        f"{name} {path}"
        for name, path in (
            ("training images", config.train_dir),
            ("validation images", config.val_dir),
            ("training labels", config.train_csv),
            ("validation labels", config.val_csv),
        )
        if not Path(path).exists()
    ]
    if missing:
        raise TrainingSetupError(
            "cannot find the dataset: " + "; ".join(missing) + ".\nRun `uv run python data_prep.py` to download "
            "and prepare it, or point --train-dir, --val-dir, --train-csv and --val-csv at your own folders and CSVs."
        )


# Lightning's resume state: a file without them holds weights only, and fit would fail on a KeyError.
RESUME_STATE_KEYS = ("state_dict", "optimizer_states", "loops")


def resume_problem(path: Path, config: Config) -> str | None:
    """Why the checkpoint at `path` cannot resume a run of `config` (what it is and what to do instead), or
    None. Read with weights_only=True, so nothing in it runs; one that will not load so is left to Lightning."""
    import torch

    from face_match_age.files.checkpoint_files import starts_like_zip

    try:  # mmap: no copy of the weights in memory; it reads only torch's zip format
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=starts_like_zip(path))
    except Exception:  # noqa: BLE001  truncated, corrupt, not torch's: checkpoint_damage says which
        return None
    if not isinstance(checkpoint, dict):
        return "it is not a training checkpoint; resume from last.ckpt or best.ckpt of a train.py run"
    missing = [key for key in RESUME_STATE_KEYS if key not in checkpoint]
    if "state_dict" in missing and checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        return (
            "it holds bare network weights (such as the VGGFace2 file), not a training checkpoint; to train "
            "from pretrained weights start without --resume and use --pretrained vggface2 or casia-webface "
            "(their files belong in $TORCH_HOME/checkpoints)"
        )
    if missing:
        return (
            f"it holds the age model's weights only (no {', '.join(missing)}), so training cannot continue "
            "from it; use it with infer.py or evaluate.py --ckpt, or train again without --resume"
        )
    return _settings_problem(checkpoint, config, path)


def _settings_problem(checkpoint: dict, config: Config, path: Path) -> str | None:
    # The settings a resume cannot change, as the config fields declare them (changes=("training", ...)): the
    # network's shape, the loss, the optimizer's restored learning rates, the freezing schedule and the crop size
    # the weights learned on.
    recorded = {**(checkpoint.get("hyper_parameters") or {}), **(checkpoint.get("datamodule_hyper_parameters") or {})}
    wanted = {name: getattr(config, name) for name in settings_that_change("training")}
    differ = [
        f"{name} {recorded[name]} (this command: {value})"
        for name, value in wanted.items()
        if name in recorded and recorded[name] != value
    ]
    if not differ:
        return None
    saved_config = path.parent / "config.json"
    same = f"--config {saved_config}" if saved_config.is_file() else "the options of the run that wrote it"
    return (
        f"it was trained with {'; '.join(differ)}; resume with the same settings ({same}) or train again without "
        "--resume"
    )


def build_trainer(
    config: Config, choice: DeviceChoice, extra_callbacks: tuple[Callback, ...] = (), progress_bar: bool = True
) -> tuple[L.Trainer, RunRecord, LastCheckpoint, StopOnSignal]:
    from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger
    from lightning.pytorch.utilities.exceptions import MisconfigurationException

    from callbacks import (
        LastCheckpoint,
        RandomStateCheckpoint,
        RunRecord,
        ScalarLayout,
        StopOnSignal,
        ValidationPredictionImages,
        backbone_freezing,
    )

    logger = TensorBoardLogger(
        save_dir=str(config.log_dir.parent), name=config.log_dir.name, default_hp_metric=False
    )  # hp_metric: best val MAE, written by RunRecord once there is one (not Lightning's -1 placeholder)
    # best.ckpt is the model to use: its weights, hyper-parameters and usage (model.on_save_checkpoint), without
    # the optimizer's state or the callbacks' (a third of the size); last.ckpt holds everything a resume needs.
    best = ModelCheckpoint(
        dirpath=config.checkpoint_dir,
        filename="best",
        monitor=MONITOR,
        mode="min",
        save_top_k=1,
        save_weights_only=True,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )  # a stable name: best.ckpt
    last = LastCheckpoint(config.checkpoint_dir, config.checkpoint_every_n_steps)  # after best: it saves best's state
    record = RunRecord(config, "train.py", MONITOR)
    stop = StopOnSignal()
    callbacks: list[Callback] = [
        best,
        last,
        stop,
        EarlyStopping(monitor=MONITOR, mode="min", patience=config.patience),
        LearningRateMonitor(logging_interval="epoch"),
        ValidationPredictionImages(config.logged_sample_faces, config.figure_sample_size),
        ScalarLayout(),
        RandomStateCheckpoint(),
        record,
        *extra_callbacks,
    ]
    freezing = backbone_freezing(config.freeze_backbone_epochs)
    if freezing is not None:
        callbacks.append(freezing)
    try:
        trainer = _trainer(config, choice, logger, callbacks, progress_bar)
    except (MisconfigurationException, ValueError, TypeError) as error:  # e.g. --devices 0,1 on a CPU machine
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0].rstrip(".")
        raise TrainingSetupError(
            f"cannot set up training on {choice.accelerator}: {reason}; check --device, --devices, "
            "--num-nodes, --strategy and --precision",
            ExitCode.USAGE,
        ) from None
    if trainer.is_global_zero:
        print(f"Training on {choice.describe()}")
    return trainer, record, last, stop


def _trainer(config: Config, choice: DeviceChoice, logger, callbacks: list[Callback], progress_bar: bool) -> L.Trainer:
    import lightning as L

    from face_match_age.training.checkpointing import AtomicCheckpointIO
    from face_match_age.training.console import quiet_lightning

    quiet_lightning()
    return L.Trainer(
        accelerator=choice.accelerator,
        precision=choice.lightning_precision,
        devices=trainer_devices(config, choice),
        num_nodes=config.num_nodes,
        strategy=config.strategy,
        max_epochs=config.max_epochs,
        logger=logger,
        callbacks=callbacks,
        limit_train_batches=_limit(config.limit_train_batches),
        limit_val_batches=_limit(config.limit_val_batches),
        log_every_n_steps=config.log_every_n_steps,
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=progress_bar,
    )


def trainer_devices(config: Config, choice: DeviceChoice) -> int | list[int] | str:
    """Lightning's `devices`: --devices as given, or the one GPU that --device cuda:N names."""
    if choice.index is None:
        return devices_value(config.devices)
    if config.devices != "auto":
        raise TrainingSetupError(
            f"--device {config.device} names one GPU and --devices {config.devices} others; give one of them "
            f"(several GPUs: --device cuda --devices 0,1)",
            ExitCode.USAGE,
        )
    return [choice.index]


def _limit(text: str) -> int | float | None:
    """batch_limit, or None (Lightning's default) for all batches: Lightning then keeps quiet about it."""
    limit = batch_limit(text)
    return None if isinstance(limit, float) and limit == 1.0 else limit


def train(config: Config, extra_callbacks: tuple[Callback, ...] = (), progress_bar: bool = True) -> TrainingResult:
    """Train (or resume) the age model as `config` says; the Python API behind `python train.py`.
    `progress_bar=False` for callers whose output is read later (a notebook), where the bar is noise."""
    import lightning as L
    from lightning.pytorch.utilities import rank_zero_only
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from callbacks import GuessingBaselineLines
    from face_match_age.device import choose_device
    from face_match_age.training.baselines import guessing_baseline
    from loader import FaceAgeDataModule, UnreadableImageError, raised_message
    from model import build_age_model

    check_inputs(config)
    L.seed_everything(config.seed, workers=True, verbose=False)
    choice = choose_device(config.device, config.precision)
    datamodule = FaceAgeDataModule(config, pin_memory=choice.accelerator == "cuda")
    datamodule.setup("fit")  # the labels now: the baseline and the head's starting point come from them
    assert datamodule.train_set is not None and datamodule.val_set is not None  # setup("fit") read both
    training_ages = datamodule.train_set.labels["age"]
    baseline = guessing_baseline(training_ages, datamodule.val_set.labels["age"], config.label_sigma)
    lines = GuessingBaselineLines(baseline.scalars())
    trainer, record, last, stop = build_trainer(config, choice, (lines, *extra_callbacks), progress_bar)
    rank_zero_only(_announce)(baseline)
    model = build_age_model(config)
    if config.resume_checkpoint is None:  # a resumed run keeps the head it trained
        model.start_at_prior(training_ages)
    try:
        trainer.fit(
            model, datamodule=datamodule, ckpt_path=str(config.resume_checkpoint) if config.resume_checkpoint else None
        )
    except SIGTERMException:
        raise TrainingStopped(
            stop.signal_name or "SIGTERM",
            _resume_point(last, config),
            last.saved_on_stop,
            trainer.current_epoch,
            trainer.global_step,
        ) from None
    except UnreadableImageError as error:
        # Met here rather than by opening every image before training: for 500k images that is minutes of disk reads.
        resume_from = _resume_point(last, config)
        then = f"resume with --resume {resume_from}" if resume_from else "run again"
        raise TrainingDataError(
            f"{raised_message(error)}. Delete the file or remove its row from the CSV, then {then}", ExitCode.INPUT
        ) from None
    except OutputError as error:  # a checkpoint that could not be written: the file it was to replace is whole
        what = disk_full_message(error.target, "another --ckpt-dir") if is_disk_full(error) else str(error)
        resume_from = _resume_point(last, config)
        then = f"; then resume with --resume {resume_from}" if resume_from else "; then run again"
        raise TrainingDataError(f"{what}{then}", ExitCode.OUTPUT) from None
    return TrainingResult(
        config.checkpoint_dir / "best.ckpt",
        config.checkpoint_dir / "last.ckpt",
        record.best_epoch,
        record.best,
        Path(_log_dir(trainer)),
        baseline,
    )


def _log_dir(trainer: L.Trainer) -> str:
    """The TensorBoard run folder of build_trainer's logger."""
    log_dir = trainer.logger.log_dir if trainer.logger is not None else None
    assert log_dir is not None  # build_trainer gives every Trainer a TensorBoardLogger, which has one
    return log_dir


def _announce(baseline: GuessingBaseline) -> None:
    # Before the first epoch, so that its MAE is read against what guessing scores.
    print(f"Baseline to beat, {baseline.describe()}")


def _resume_point(last: LastCheckpoint, config: Config) -> Path | None:
    # Only this run's saves count: a last.ckpt in the folder may be left from an older run.
    return last.path if last.saved_step is not None else config.resume_checkpoint


EXAMPLES = (
    "uv run python train.py                                  # data/IMDB from data_prep.py, config defaults",
    "uv run python train.py --data-dir data/MINE             # a set data_prep.py wrote with --out data/MINE",
    "uv run python train.py --resume checkpoints/last.ckpt   # resume where a run stopped",
    "uv run python train.py --config checkpoints/config.json --resume checkpoints/last.ckpt   # same, no retyping",
    "uv run python train.py --devices 4 --strategy ddp       # several GPUs (add --num-nodes for machines)",
)
EXIT_CODES = {
    ExitCode.OK: "trained (or stopped early by the patience rule)",
    ExitCode.USAGE: "bad command line, a --device this machine lacks, or options Lightning cannot set up",
    ExitCode.INPUT: "missing data, bad labels, or an unreadable image met while training",
    ExitCode.OUTPUT: "a checkpoint, config.json or TensorBoard file cannot be written (a full disk too)",
    ExitCode.MODEL: "pretrained weights not on this machine (said on several lines, with where to put them), or a "
    "--resume checkpoint missing, damaged, not resumable or trained with other settings",
    ExitCode.OUT_OF_MEMORY: "out of memory on the device (lower --batch-size)",
    ExitCode.INTERRUPTED: "stopped by Ctrl-C; last.ckpt saved, and the line printed is the command that resumes",
    ExitCode.TERMINATED: "stopped by SIGTERM (a scheduler's stop); last.ckpt saved, resume as for 130",
}
# --ckpt is the model to use in infer.py and evaluate.py; here it would be ambiguous (resume? start from?).
CKPT_HINT = (
    "train.py resumes a run with --resume PATH (its last.ckpt); --ckpt names the model to use in infer.py and "
    "evaluate.py"
)


def build_parser() -> ConfigArgumentParser:
    parser = ConfigArgumentParser(
        description=__doc__,
        epilog=help_epilog(EXAMPLES, EXIT_CODES),
    )
    add_config_arguments(parser, TRAIN_OPTIONS)
    add_refused_option(parser, "--ckpt", CKPT_HINT)
    return parser


def main(argv: list[str] | None = None, extra_callbacks: tuple[Callback, ...] = ()) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    _, config = parse_config(build_parser(), argv)
    try:
        check_data(config)  # before importing torch and Lightning: an instant answer
    except TrainingSetupError as error:
        print_error(error)
        return error.exit_code
    import torch
    from lightning.pytorch.utilities import rank_zero_only

    from face_match_age.device import DeviceUnavailableError
    from face_match_age.network.weights import PretrainedWeightsError
    from loader import LabelsError

    try:
        result = train(config, extra_callbacks)
    except (TrainingSetupError, TrainingDataError) as error:
        print_error(error)
        return error.exit_code
    except LabelsError as error:
        print_error(error)
        return ExitCode.INPUT
    except PretrainedWeightsError as error:
        print_error(error)
        return ExitCode.MODEL
    except DeviceUnavailableError as error:
        print_error(error)
        return ExitCode.USAGE
    except torch.OutOfMemoryError as error:  # torch.cuda.OutOfMemoryError too: a subclass
        print_error(out_of_memory_message(error, "training", f"lower --batch-size (now {config.batch_size})"))
        return ExitCode.OUT_OF_MEMORY
    except OSError as error:  # outside checkpoints: config.json, TensorBoard's event files
        if not isinstance(error, OutputError) and not is_disk_full(error):
            raise
        where = getattr(error, "target", None) or error.filename or config.checkpoint_dir
        print_error(disk_full_message(where, "another --ckpt-dir or --log-dir") if is_disk_full(error) else error)
        return ExitCode.OUTPUT
    except TrainingStopped as stopped:
        rank_zero_only(_report_stop)(stopped, argv)
        return stopped.exit_code
    rank_zero_only(_report)(result, config)
    return ExitCode.OK


def _report_stop(stopped: TrainingStopped, argv: list[str]) -> None:
    if stopped.checkpoint is None:
        print(
            f"{stopped}, before any checkpoint was written; run the same command again to start over", file=sys.stderr
        )
        return
    saved = "saved" if stopped.saved_now else "latest checkpoint"
    print(
        f"{stopped}; {saved} {stopped.checkpoint}; resume with: {resume_command(argv, stopped.checkpoint)}",
        file=sys.stderr,
    )


def resume_command(argv: list[str], checkpoint: Path) -> str:
    """The train.py command line of `argv` that resumes from `checkpoint` (any --resume it had replaced)."""
    kept, skip_value = [], False
    for argument in argv:
        if skip_value:
            skip_value = False
        elif argument in ("--resume", "--resume-checkpoint"):
            skip_value = True
        elif not argument.startswith(("--resume=", "--resume-checkpoint=")):
            kept.append(argument)
    return shlex.join(["uv", "run", "python", "train.py", *kept, "--resume", str(checkpoint)])


def _report(result: TrainingResult, config: Config) -> None:
    if result.best_val_mae is None:
        print("No validation MAE was recorded, so there is no best checkpoint (was --limit-val-batches 0?)")
        return
    print(
        f"Best checkpoint: {result.best_checkpoint} (epoch {result.best_epoch}, validation MAE "
        f"{result.best_val_mae:.2f} years; predicting the median age: {result.baseline.mae:.2f})\n"
        f"Last checkpoint: {result.last_checkpoint}\n"
        f"TensorBoard: uv run tensorboard --logdir {config.log_dir}, then open http://localhost:6006/#custom_scalars"
    )


if __name__ == "__main__":
    sys.exit(main())
