"""Every Lightning callback of train.py, in one place: TensorBoard pictures of validation predictions,
resumable randomness, when checkpoints are saved, how a signal stops training, and backbone freezing.

`ValidationPredictionImages` draws, after each validation epoch, a grid of a fixed handful of
validation faces labelled with true age, predicted age and uncertainty, and a predicted-versus-true
figure with the MAE of each decade. It runs on rank zero only, on a fixed sample whose size is set
in the config, so its cost does not grow with the dataset.

`ScalarLayout` writes TensorBoard's custom-scalars layout at fit start: train and validation MAE, loss
and CS@5 on shared charts, side by side (the "Custom Scalars" tab).

`GuessingBaselineLines` logs, beside each validation MAE, CS@5 and loss, what guessing without looking at
the faces scores: a flat line the curve must get under (above, for CS@5).

`RunRecord` saves the resolved config beside the logs and checkpoints, remembers the best validation
MAE and its epoch, and keeps TensorBoard's hyper-parameter metric (`hp_metric`) at that MAE; it writes
the hyper-parameters itself, so `hp_metric` never holds Lightning's -1 placeholder.

`RandomStateCheckpoint` stores the random number generators in checkpoints so that a resumed run
draws the same augmentations, shuffles and dropout masks as an uninterrupted one.

`LastCheckpoint` writes <ckpt-dir>/last.ckpt at every epoch end (after its validation, improved or not),
every `every_n_steps` optimizer steps within an epoch, and when SIGTERM or SIGINT stops the run.
Lightning's `ModelCheckpoint(save_last=True)` cannot do this: since Lightning 2.6 it writes last.ckpt only
together with a top-k checkpoint, so with save_top_k=1 an epoch that does not improve leaves last.ckpt behind.

`StopOnSignal` turns the first Ctrl-C into what Lightning does on SIGTERM: finish the current batch, then stop
with a `SIGTERMException`, which `LastCheckpoint` answers with a checkpoint. A second Ctrl-C stops at once.

`FreezeBackbone` keeps the pretrained backbone frozen for the first `freeze_backbone_epochs` epochs.
"""

from __future__ import annotations

import random
import signal
import threading
from argparse import Namespace
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BaseFinetuning, Checkpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from PIL import ImageDraw, ImageFont
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams
from torchvision.utils import make_grid

from config import Config, save_config
from face_match_age.detection.imaging import tensor_to_image
from face_match_age.evaluation.figures import predicted_vs_true_figure
from face_match_age.network.age_network import checkpoint_parameter_name

LAST_NAME = "last.ckpt"
SAMPLE_SEED = 1234  # which validation faces are shown must not change between epochs or runs
INFERENCE_BATCH = 64  # faces per forward pass while drawing; small enough for any GPU
# Tags as model.py logs them; train/loss is also logged per step, and only its epoch mean compares with val/loss.
# Each chart holds its guessing baseline (GuessingBaselineLines) as a flat line: a curve above it learned nothing.
SCALAR_LAYOUT = {
    "train vs validation": {
        "MAE (years)": ["Multiline", ["^train/mae$", "^val/mae$", "^val/mae_baseline$"]],
        "loss": ["Multiline", ["^train/loss_epoch$", "^val/loss$", "^val/loss_baseline$"]],
        "CS@5 (share within 5 years)": ["Multiline", ["^train/cs5$", "^val/cs5$", "^val/cs5_baseline$"]],
    }
}


class ScalarLayout(L.Callback):
    @rank_zero_only
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Each fit (a resume too) writes into a new TensorBoard version folder, which needs its own layout.
        experiment = getattr(trainer.logger, "experiment", None)  # Lightning's Logger class does not declare it
        if experiment is not None and hasattr(experiment, "add_custom_scalars"):
            experiment.add_custom_scalars(SCALAR_LAYOUT)


class GuessingBaselineLines(L.Callback):
    """Logs the guessing baseline (face_match_age.training.baselines) after every validation, so TensorBoard
    draws it as a flat line on the chart of the figure it is the baseline of."""

    def __init__(self, scalars: dict[str, float]) -> None:
        super().__init__()
        self.scalars = scalars

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        for tag, value in self.scalars.items():
            pl_module.log(tag, value, sync_dist=False)  # the same value on every rank: nothing to reduce


class ValidationPredictionImages(L.Callback):
    def __init__(self, grid_faces: int = 16, figure_faces: int = 512) -> None:
        super().__init__()
        self.grid_faces = grid_faces
        self.figure_faces = figure_faces

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        writer = getattr(trainer.logger, "experiment", None)  # Lightning's Logger class does not declare it
        if writer is None or not hasattr(writer, "add_image"):
            return
        datamodule = getattr(trainer, "datamodule", None)  # set by fit(); the Trainer class does not declare it
        dataset = datamodule.val_set if datamodule is not None else None
        if dataset is None or len(dataset) == 0:
            return
        indices = _fixed_sample(len(dataset), max(self.grid_faces, self.figure_faces))
        faces, true_ages, predicted, spread = _predict(pl_module, dataset, indices)
        shown = slice(0, self.grid_faces)
        grid = _annotated_grid(faces[shown], true_ages[shown], predicted[shown], spread[shown])
        step = trainer.global_step
        writer.add_image("val/predictions", grid, step)
        writer.add_figure("val/predicted_vs_true", predicted_vs_true_figure(true_ages, predicted), step)


def _fixed_sample(size: int, count: int) -> list[int]:
    generator = torch.Generator().manual_seed(SAMPLE_SEED)
    return torch.randperm(size, generator=generator)[:count].tolist()


@torch.no_grad()
def _predict(pl_module, dataset, indices):
    was_training = pl_module.training
    pl_module.eval()
    faces, true_ages, predicted, spread = [], [], [], []
    for start in range(0, len(indices), INFERENCE_BATCH):
        items = [dataset[i] for i in indices[start : start + INFERENCE_BATCH]]
        batch = torch.stack([item[0] for item in items])
        prediction = pl_module.network.predict(batch.to(pl_module.device))
        faces.append(batch)
        true_ages.append(torch.stack([item[1] for item in items]).float())
        predicted.append(prediction["age"].cpu())
        spread.append(prediction["age_std"].cpu())
    pl_module.train(was_training)
    return torch.cat(faces), torch.cat(true_ages), torch.cat(predicted), torch.cat(spread)


def _annotated_grid(faces, true_ages, predicted, spread) -> torch.Tensor:
    font = ImageFont.load_default(size=14)
    tiles = []
    for face, truth, guess, std in zip(faces, true_ages, predicted, spread):
        tile = tensor_to_image(face)
        draw = ImageDraw.Draw(tile)
        draw.rectangle((0, tile.height - 36, tile.width, tile.height), fill=(0, 0, 0))
        draw.text((4, tile.height - 35), f"true {truth:.0f}", fill=(255, 255, 255), font=font)
        colour = (120, 255, 120) if abs(guess - truth) <= 5 else (255, 140, 120)
        draw.text((4, tile.height - 18), f"pred {guess:.0f} ± {std:.0f}", fill=colour, font=font)
        tiles.append(torch.from_numpy(np.array(tile)).permute(2, 0, 1))
    return make_grid(torch.stack(tiles), nrow=min(8, len(tiles)), padding=2)


class RunRecord(L.Callback):
    def __init__(self, config: Config, script: str, monitor: str = "val/mae") -> None:
        super().__init__()
        self.config, self.script, self.monitor = config, script, monitor
        self.best: float | None = None
        self.best_epoch: int | None = None

    @rank_zero_only
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Written at fit start, not before: ModelCheckpoint warns about a non-empty folder otherwise.
        log_dir = trainer.logger.log_dir if trainer.logger else None
        folders = [self.config.checkpoint_dir] + ([Path(log_dir)] if log_dir else [])
        for folder in folders:
            save_config(self.config, folder, extra={"script": self.script})

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or value is None:
            return
        if self.best is None or float(value) < self.best:
            self.best, self.best_epoch = float(value), trainer.current_epoch
        pl_module.log("hp_metric", self.best, sync_dist=False, rank_zero_only=True)

    @rank_zero_only
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # train.py's logger has default_hp_metric=False, so Lightning wrote no hyper-parameters (with it, they
        # come with an hp_metric of -1 that TensorBoard shows until the first validation). They are written here,
        # once Lightning has collected them, naming hp_metric without a value: its values are the best MAEs that
        # on_validation_epoch_end logs.
        if isinstance(trainer.logger, TensorBoardLogger):
            _write_hparams(trainer.logger.experiment, trainer.logger.hparams, metric_names=("hp_metric",))

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best, self.best_epoch = state_dict.get("best"), state_dict.get("best_epoch")


def _write_hparams(writer: SummaryWriter, params: dict | Namespace, metric_names: tuple[str, ...]) -> None:
    # TensorBoard's HParams tab takes int, float, str and bool; anything else (None, a path) is shown as text.
    items = vars(params).items() if isinstance(params, Namespace) else params.items()  # Lightning's type allows both
    shown = {name: value if isinstance(value, int | float | str | bool) else str(value) for name, value in items}
    # The metrics' values are not part of these summaries: the tab reads them from the scalars of those names.
    experiment, session_start, session_end = hparams(shown, dict.fromkeys(metric_names))
    assert writer.file_writer is not None  # None only once the writer is closed, after training
    for summary in (experiment, session_start, session_end):
        writer.file_writer.add_summary(summary)


class RandomStateCheckpoint(L.Callback):
    """Saves Python, NumPy and torch generator states with each checkpoint and restores them before the
    resumed run makes its first training data iterator: on loading the checkpoint, and again after the
    sanity check (which draws random numbers of its own) when one runs. Lightning's public hooks offer no
    later point before that iterator, which the uninterrupted run makes at the epoch start.

    Only exact for epoch-end checkpoints and for augmentations drawn in the main process (num_workers 0):
    worker processes keep generators of their own. After an in-epoch checkpoint (LastCheckpoint)
    the resumed epoch starts a fresh pass over the data, as docs/training.md describes; the restored
    generators then draw that pass's order."""

    def __init__(self) -> None:
        super().__init__()
        self._pending: dict | None = None

    def state_dict(self) -> dict:
        version, mt_state, gauss = random.getstate()
        # numpy's stubs type get_state() as legacy=False's dict; the default, legacy=True, returns this tuple
        numpy_state: tuple[str, np.ndarray, int, int, float] = np.random.get_state()  # type: ignore[assignment]
        kind, keys, position, has_gauss, cached = numpy_state
        state = {
            "python": (version, list(mt_state), gauss),
            # Tensors and plain numbers only, so checkpoints still load with weights_only=True.
            "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached),
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        self._pending = state_dict
        self._restore()

    def on_sanity_check_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pending = None  # the data iterator is made: later sanity checks (a new fit) restore nothing

    def _restore(self) -> None:
        if self._pending is None:
            return
        state = self._pending
        version, mt_state, gauss = state["python"]
        random.setstate((version, tuple(mt_state), gauss))
        kind, keys, position, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


class LastCheckpoint(Checkpoint):
    """Keeps `dirpath`/last.ckpt at the latest point training reached (see the module docstring).

    A Checkpoint subclass, so Lightning runs it after the other callbacks: the best-checkpoint and early-stopping
    states it saves are those of the validation that just ended."""

    def __init__(self, dirpath: Path, every_n_steps: int = 0) -> None:
        super().__init__()
        self.path = Path(dirpath) / LAST_NAME
        self.every_n_steps = every_n_steps
        self.saved_on_stop = False  # whether last.ckpt holds the step at which SIGTERM or SIGINT stopped training
        self.saved_step: int | None = None  # global step of this run's latest save; None: nothing saved yet

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        # Not after an epoch's last batch: its validation has not run yet, and the epoch-end save follows.
        last_batch = batch_idx + 1 >= trainer.num_training_batches
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0 and not last_batch:
            self._save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The epoch's end: after its validation and, since Lightning calls checkpoint callbacks last, after early
        # stopping has judged it (saving at validation end would make a resumed run judge it again, without metrics).
        self._save(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        # Lightning raises SIGTERMException only between batches, where the state is whole; other exceptions can
        # strike mid-step, so nothing is saved for them and last.ckpt stays at the last consistent point. Nor is
        # anything saved in the middle of validation: a resumed run would judge the epoch on part of the set.
        if isinstance(exception, SIGTERMException) and not trainer.validating:
            self._save(trainer)
            self.saved_on_stop = self.saved_step == trainer.global_step  # now, or by a save at this very step

    def _save(self, trainer: L.Trainer) -> None:
        if (
            trainer.sanity_checking
            or trainer.state.fn != TrainerFn.FITTING
            or trainer.global_step == 0
            or self.saved_step == trainer.global_step
        ):
            return
        # weights_only=False: a resumable checkpoint (optimizer, loops, callbacks), said outright so Lightning
        # does not log that it chose it (this is about what is saved, not how it is loaded).
        trainer.save_checkpoint(self.path, weights_only=False)
        self.saved_step = trainer.global_step


class StopOnSignal(L.Callback):
    """Once training runs, SIGTERM and the first SIGINT (Ctrl-C) stop it at the end of the current batch, through
    Lightning's SIGTERM handling; `signal_name` says which arrived first. A second SIGINT stops at once."""

    def __init__(self) -> None:
        super().__init__()
        self.signal_name: str | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Installed here, after Lightning registered its SIGTERM handler at fit start, so that ours can call it.
        if threading.current_thread() is not threading.main_thread():
            return  # Python only delivers signals to the main thread
        lightning_sigterm = signal.getsignal(signal.SIGTERM)

        def on_sigterm(signum, frame) -> None:
            # Once per process: with DDP, a stop sent to the whole job reaches each rank twice (from the sender,
            # and from rank 0, which passes it on), and Lightning's handler runs a collective broadcast at each
            # call, which the other ranks would not match.
            if self.signal_name is not None:
                return
            self.signal_name = signal.Signals(signum).name
            if callable(lightning_sigterm):
                lightning_sigterm(signal.SIGTERM, frame)

        def on_sigint(signum, frame) -> None:
            signal.signal(signal.SIGINT, signal.default_int_handler)  # the next Ctrl-C interrupts at once
            on_sigterm(signum, frame)

        signal.signal(signal.SIGTERM, on_sigterm)
        signal.signal(signal.SIGINT, on_sigint)
        # No restoring needed: when fit ends, however it ends, Lightning puts back the handlers it found at its start.


class FreezeBackbone(BaseFinetuning):
    """Keeps the backbone frozen (weights and BatchNorm statistics) for the first `epochs` epochs,
    or for the whole run when `epochs` is -1, so the new head learns before it can disturb the backbone."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs = epochs

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        # BatchNorm too: its statistics are part of the pretrained features.
        self.freeze(pl_module.get_submodule("network.backbone"), train_bn=False)

    def finetune_function(self, pl_module: L.LightningModule, current_epoch: int, optimizer) -> None:
        if current_epoch == self.epochs:
            # At the backbone's own rate: without `lr`, Lightning would take the first group's, the head's.
            self.unfreeze_and_add_param_group(
                pl_module.get_submodule("network.backbone"),
                optimizer,
                lr=pl_module.hparams["learning_rate"],
                initial_denom_lr=1.0,
            )
            optimizer.param_groups[-1]["name"] = "backbone"

    def load_state_dict(self, state_dict: dict) -> None:
        # The saved optimizer groups list parameters by name; checkpoints from before AgeNetwork use old names.
        metadata = state_dict.get("internal_optimizer_metadata", {})
        renamed = {
            index: [
                {**group, "params": [checkpoint_parameter_name(name) for name in group["params"]]} for group in groups
            ]
            for index, groups in metadata.items()
        }
        super().load_state_dict({**state_dict, "internal_optimizer_metadata": renamed})


def backbone_freezing(epochs: int) -> FreezeBackbone | None:
    """The callback for `freeze_backbone_epochs` (0: train everything from the start)."""
    return None if epochs == 0 else FreezeBackbone(epochs)
