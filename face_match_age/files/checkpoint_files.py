"""Checkpoint files on disk: written atomically, and checked for damage without unpickling anything.

Kept free of Lightning so that inference (age_network.py) can use the damage check without its import cost.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import torch

from face_match_age.files.output_files import write_atomically

ZIP_MAGIC = b"PK\x03\x04"  # torch.save has written zip archives since torch 1.6; Lightning checkpoints are such


class DamagedCheckpointError(ValueError):
    """A checkpoint file that is truncated or corrupt (or not a checkpoint archive at all)."""


def save_checkpoint_file(checkpoint: dict[str, Any], path: Path) -> Path:
    """torch.save `checkpoint` to `path` through a temporary file in the same folder, flushed to disk and
    then renamed over `path`: a crash or a full disk while saving leaves the previous file whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as file:
            torch.save(checkpoint, file)

    return write_atomically(path, write, durable=True)


def checkpoint_damage(path: Path) -> str | None:
    """Why the checkpoint at `path` is damaged, or None when it is an intact archive.

    torch.save writes a zip archive whose table of contents sits at its very end and whose members carry
    CRC-32 checksums, so reading it with zipfile finds truncation and flipped bytes. torch.load checks
    neither checksum: a flipped byte in the weights loads silently. Reads the whole file (about a second
    per GB)."""
    path = Path(path)
    try:
        with open(path, "rb") as file:
            head = file.read(len(ZIP_MAGIC))
        if not head:
            return "the file is empty"
        if head != ZIP_MAGIC:
            return "it is not a PyTorch checkpoint archive (it does not start like a zip file)"
        with zipfile.ZipFile(path) as archive:
            broken_member = archive.testzip()
    except zipfile.BadZipFile as error:
        return f"it is truncated or corrupt ({error})"
    except (OSError, EOFError, ValueError, RuntimeError) as error:
        return f"it cannot be read ({type(error).__name__}: {error})"
    if broken_member is not None:
        return f"it is corrupt: {broken_member} inside it fails its checksum"
    return None


def load_checked(path: Path, map_location: str | torch.device = "cpu") -> Any:
    """torch.load(path, weights_only=True) once the file's checksums are found intact: the one way this toolkit
    reads a checkpoint or weights file, since torch.load alone loads a flipped byte in the weights without a
    word (ages off by decades). Costs a read of the whole file, about a second per GB, at each load.

    Raises DamagedCheckpointError (its message: checkpoint_damage's reason) for a damaged file; any other error
    of torch.load (an unsafe pickle, a file of another kind) as torch.load raised it. A file in torch's
    pre-1.6 format (not a zip archive, as the released VGGFace2 weights may be) has no checksums to check:
    it is loaded, and reported as damaged only when torch.load fails on it."""
    damage = archive_damage(path)
    if damage is not None:
        raise DamagedCheckpointError(damage)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception:  # torch raises many types for truncated or foreign files
        damage = None if starts_like_zip(path) else checkpoint_damage(path)  # intact archive: torch says why
        if damage is None:
            raise
        raise DamagedCheckpointError(damage) from None


def archive_damage(path: Path) -> str | None:
    """checkpoint_damage of a zip archive (what torch.save writes); None for a file that does not start like
    one (torch's pre-1.6 format has no checksums to check: let torch.load judge it)."""
    return checkpoint_damage(path) if starts_like_zip(path) else None


def starts_like_zip(path: Path) -> bool:
    """Whether the file begins as torch.save's zip archives do (torch's pre-1.6 format does not)."""
    try:
        with open(path, "rb") as file:
            return file.read(len(ZIP_MAGIC)) == ZIP_MAGIC
    except OSError:
        return False  # torch.load fails on it too, and checkpoint_damage then says why


def damaged_message(path: Path, reason: str, advice: str, kind: str = "checkpoint") -> str:
    """One line for a damaged checkpoint (or other torch.save file, named by `kind`): which file, why, what to do."""
    return f"{kind} {path} is damaged: {reason}. {advice}"
