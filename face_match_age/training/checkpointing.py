"""How train.py writes its checkpoints: `AtomicCheckpointIO` writes every checkpoint through a temporary file in
the same folder and a rename. Lightning's own writer stages the file in the system's temporary folder; when that
lies on another disk the final move is a copy, and a crash during it leaves a truncated checkpoint.

(The callbacks that decide when to save, LastCheckpoint and StopOnSignal, are in the root callbacks.py with
train.py's other callbacks.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch.plugins.io import TorchCheckpointIO

from face_match_age.files.checkpoint_files import save_checkpoint_file


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch.save-based checkpoint writer, made atomic (see checkpoint_files.save_checkpoint_file)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options")
        save_checkpoint_file(checkpoint, Path(path))
