"""Which photos a folder run covers: every photo under a folder (sub-folders included, as photo libraries keep
them by year or event), or the photos a file list names (one shard of a collection spread over machines).

Photos are named by their path relative to the folder, with `/` separators, so embedding stores written on
machines that mount the collection at different places merge into one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}


class PhotoListError(ValueError):
    """A folder or file list that names no usable photos."""


def folder_photos(folder: Path, skip: Sequence[Path] = ()) -> list[str]:
    """The photos under `folder`, as sorted relative names; hidden files and folders are left out, and so are
    the files and folders `skip` names (the run's own outputs must not be read back as photos)."""
    if not folder.is_dir():
        raise PhotoListError(f"{folder} is not a folder")
    skipped = {path.resolve() for path in skip}
    names = []
    for root, folders, files in os.walk(folder):
        here, real = Path(root), Path(root).resolve()  # resolved once a folder, not once a photo
        folders[:] = sorted(f for f in folders if not f.startswith(".") and real / f not in skipped)
        photos = (f for f in files if _is_photo_name(f) and real / f not in skipped)
        names += [(here / f).relative_to(folder).as_posix() for f in photos]
    if not names:
        raise PhotoListError(f"{folder} holds no photos ({', '.join(sorted(PHOTO_SUFFIXES))}), sub-folders included")
    return sorted(names)


def listed_photos(folder: Path, file_list: Path) -> list[str]:
    """The photos `file_list` names, one per line: relative to `folder` (as `cd FOLDER && find . -type f` writes
    them) or absolute paths inside it. Blank lines are skipped; a line naming no file under `folder` is an
    error naming its line, before any photo is read."""
    try:
        lines = file_list.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise PhotoListError(f"cannot read the file list {file_list} ({error})") from None
    root, names = folder.resolve(), []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        path = Path(line.strip())
        path = (path if path.is_absolute() else root / path).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            raise PhotoListError(f"{file_list} line {number}: {line.strip()} is not a file inside {folder}")
        names.append(path.relative_to(root).as_posix())
    if not names:
        raise PhotoListError(f"{file_list} names no photos")
    return sorted(set(names))


def photo_stamp(path: Path) -> list[int] | None:
    """[size, modification time in ns] of a photo, None when it cannot be read: what tells a file replaced
    under the same name. Cheap (one stat, no read of 100,000 photos at each rerun); without the folder, so a
    store's stamps hold on another machine that sees the same files (the same mount, or copies that kept
    their times)."""
    try:
        status = path.stat()
    except OSError:
        return None
    return [status.st_size, status.st_mtime_ns]


def _is_photo_name(name: str) -> bool:
    return not name.startswith(".") and Path(name).suffix.lower() in PHOTO_SUFFIXES
