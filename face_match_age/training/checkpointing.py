"""How train.py saves its progress: atomic checkpoint files, a last.ckpt that always holds the latest point
training reached, and a checkpoint when a scheduler or Ctrl-C stops the run.

`LastCheckpoint` writes <ckpt-dir>/last.ckpt at every epoch end (after its validation, improved or not),
every `every_n_steps` optimizer steps within an epoch, and when SIGTERM or SIGINT stops the run.
Lightning's `ModelCheckpoint(save_last=True)` cannot do this: since Lightning 2.6 it writes last.ckpt only
together with a top-k checkpoint, so with save_top_k=1 an epoch that does not improve leaves last.ckpt behind.

`StopOnSignal` turns the first Ctrl-C into what Lightning does on SIGTERM: finish the current batch, then stop
with a `SIGTERMException`, which `LastCheckpoint` answers with a checkpoint. A second Ctrl-C stops at once.

`AtomicCheckpointIO` writes every checkpoint through a temporary file in the same folder and a rename.
Lightning's own writer stages the file in the system's temporary folder; when that lies on another disk the
final move is a copy, and a crash during it leaves a truncated checkpoint.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from face_match_age.files.checkpoint_files import save_checkpoint_file

LAST_NAME = "last.ckpt"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch.save-based checkpoint writer, made atomic (see checkpoint_files.save_checkpoint_file)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options")
        save_checkpoint_file(checkpoint, Path(path))


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
