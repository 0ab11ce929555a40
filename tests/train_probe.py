"""train.py's main, held still at an exact point so that a test can signal or kill it there.

    python tests/train_probe.py READY_FILE STEP [train.py options...]

Before the training batch that would take global step STEP + 1, writes READY_FILE and waits until Lightning
has seen SIGTERM (or SIGINT, which train.py turns into the same), then lets that batch run; a SIGKILL ends it
while it waits. Waiting on a file and a signal, not on time, keeps the tests exact on a loaded machine.
"""

import sys
import time
from pathlib import Path

import lightning as L
import torch

import train

MAX_WAIT_S = 300  # only so that a forgotten process ends by itself


class HoldBeforeStep(L.Callback):
    def __init__(self, ready_file: Path, step: int) -> None:
        self.ready_file, self.step = ready_file, step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step != self.step:
            return
        self.ready_file.write_text(str(trainer.global_step))
        deadline = time.monotonic() + MAX_WAIT_S
        while not trainer.received_sigterm and time.monotonic() < deadline:
            time.sleep(0.02)


if __name__ == "__main__":
    torch.set_flush_denormal(True)  # as in the tests' own process (conftest.py): tiny CPU trainings run 10x faster
    ready_file, step, *options = sys.argv[1:]
    sys.exit(train.main(options, extra_callbacks=(HoldBeforeStep(Path(ready_file), int(step)),)))
