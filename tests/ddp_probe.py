"""Entry point for the DDP test: train.py's main with a callback recording which samples each rank saw.

Lightning's DDP launcher re-runs this very script once per extra process, so it must be a file."""

import json
import sys
from pathlib import Path

import lightning as L
import torch

import train


class RecordSeenSamples(L.Callback):
    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.seen: dict[int, list[int]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen.setdefault(trainer.current_epoch, []).extend(batch[2].tolist())

    def on_train_end(self, trainer, pl_module):
        record = {"world_size": trainer.world_size, "seen": self.seen}
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    torch.set_flush_denormal(True)  # as in the tests' own process (conftest.py): tiny CPU trainings run 10x faster
    out_dir = Path(sys.argv[1])
    sys.exit(train.main(sys.argv[2:], extra_callbacks=(RecordSeenSamples(out_dir),)))
