"""The crop-and-resize stage of data_prep.py: one photo in, one 160x160 face JPEG out (or a reason).

With detection, every photo goes through the same MTCNN crop as inference (faces.detect_faces and the
configured face-selection rule), so training sees exactly what inference sees. Without it
(--no-detect) the dataset's own crop is centre-squared and resized. Each output is written
atomically, so an interrupted run leaves only whole files, and a rerun skips them.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Generator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageOps

from face_match_age.detection.faces import build_face_detector, detect_faces_batch, select_face
from face_match_age.detection.imaging import ImageLoadError, load_image
from face_match_age.files.output_files import remove_temporary_files, write_atomically
from face_match_age.settings import Config
from face_match_age.sharding import sharded

KEPT = "kept"
JPEG_QUALITY = 95  # training crops: keep detail, the files are small anyway
PHOTOS_PER_CHUNK = 16  # photos read and detected together: enough to batch MTCNN, little lost on a crash


@dataclass(frozen=True)
class CropTask:
    source: str  # photo to read
    dest: str  # face JPEG to write


def crop_chunk(tasks: list[CropTask], config: Config, detector=None) -> list[tuple[CropTask, str]]:
    """(task, KEPT or why the photo was dropped) for a few photos, detected together whatever their sizes
    (faces.detect_faces_batch: the crops inference would cut from each photo alone)."""
    outcomes, loaded = [], []
    for task in tasks:
        try:
            image = load_image(Path(task.source))
        except ImageLoadError:
            outcomes.append((task, "unreadable image"))
            continue
        if min(image.size) < config.min_image_side:
            outcomes.append((task, f"image smaller than {config.min_image_side} pixels"))
        else:
            loaded.append((task, image))
    if detector is None:
        for task, image in loaded:
            _save_atomically(
                ImageOps.fit(image, (config.img_size, config.img_size), Image.Resampling.BILINEAR), Path(task.dest)
            )
            outcomes.append((task, KEPT))
        return outcomes
    for (task, image), found in zip(loaded, detect_faces_batch(detector, [image for _, image in loaded], config)):
        if len(found) == 0:
            outcomes.append((task, "no face detected"))
            continue
        chosen = select_face(found.boxes, found.probabilities, config.face_selection, image.size)
        pixels = found.crops[chosen].round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
        _save_atomically(Image.fromarray(pixels), Path(task.dest))
        outcomes.append((task, KEPT))
    return outcomes


def _save_atomically(face: Image.Image, dest: Path) -> None:
    write_atomically(dest, lambda tmp: face.save(tmp, format="JPEG", quality=JPEG_QUALITY))


def run_crops(
    tasks: list[CropTask], config: Config, detect: bool, workers: int, device: str = "cpu"
) -> Generator[tuple[CropTask, str], None, None]:
    """(task, outcome) for every task, as chunks finish; over `workers` processes when more than one."""
    chunks = [tasks[start : start + PHOTOS_PER_CHUNK] for start in range(0, len(tasks), PHOTOS_PER_CHUNK)]
    if workers <= 1:
        detector = build_face_detector(config, device) if detect else None
        for chunk in chunks:
            yield from crop_chunk(chunk, config, detector)
        return
    shared = sharded(
        workers,
        functools.partial(_crop_share, config, detect),
        chunks,
        (Exception,),  # a worker's error ends the run as it would in one process
        "a crop worker process died (exit code {exit_code}); rerun with --workers 1 to see its error",
    )
    try:
        with contextlib.closing(shared):  # the workers are stopped before the clean-up below
            for outcomes in shared:
                yield from outcomes
    except BaseException:  # Ctrl-C, SIGTERM or an error: the workers were killed, perhaps while one wrote a crop
        for folder in {Path(task.dest).parent for task in tasks}:
            remove_temporary_files(folder)
        raise


def _crop_share(config: Config, detect: bool, rank: int, world: int, chunks: list[list[CropTask]]):
    """One crop worker's part of run_crops: the outcomes of its chunks, one list per chunk."""
    torch.set_num_threads(1)  # the workers are the parallelism; threads per worker would only fight
    detector = build_face_detector(config, "cpu") if detect else None
    for chunk in chunks:
        yield crop_chunk(chunk, config, detector)


class CropLog:
    """The outcome of every photo already processed, appended as they finish, so an interrupted run
    continues where it stopped (kept photos are also recognised by their output file).

    A failure is remembered with the size and modification time of its source photo, and the photo is
    tried again once either changes (the user replaced or repaired it). That costs one stat() per failed
    photo on a rerun, nothing per kept one: cheap on 500k photos, where re-trying every failure (MTCNN on
    each) would not be."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, dict] = {}
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:  # the last line of a killed run may be cut short
                    continue
                self.entries[entry["dest"]] = entry

    def pending(self, tasks: Iterable[CropTask]) -> list[CropTask]:
        return [t for t in tasks if not self._done(t)]

    def _done(self, task: CropTask) -> bool:
        entry = self.entries.get(task.dest)
        if entry is None:  # a crop written just before a run was killed, not yet logged, is done too
            return Path(task.dest).exists()
        return entry["outcome"] == KEPT or self._still_failed(task.dest, task.source)  # a kept one costs no stat()

    def outcome(self, task: CropTask) -> str:
        if Path(task.dest).exists():
            return KEPT
        return self.entries[task.dest]["outcome"] if task.dest in self.entries else "not processed"

    def changed_failures(self) -> int:
        """How many photos that failed have changed on disk since (a rerun tries them again)."""
        return sum(
            1
            for dest, entry in self.entries.items()
            if entry["outcome"] != KEPT and not self._still_failed(dest, entry.get("source"))
        )

    def _still_failed(self, dest: str, source: str | None) -> bool:
        entry = self.entries.get(dest)
        # Entries from before stamps were logged have none: those failures are tried once more.
        return entry is not None and entry["outcome"] != KEPT and entry.get("stamp") == _stamp(source)

    @contextlib.contextmanager
    def appending(self):
        """The log opened for record(); a line cut short by a killed run is ended first, so the next
        entry is not glued to it (and lost with it)."""
        if self.path.exists() and self.path.stat().st_size:
            with open(self.path, "rb") as existing:
                existing.seek(-1, os.SEEK_END)
                cut_short = existing.read(1) != b"\n"
        else:
            cut_short = False
        with open(self.path, "a", encoding="utf-8") as handle:
            if cut_short:
                handle.write("\n")
            yield handle

    def record(self, handle, task: CropTask, outcome: str) -> None:
        entry: dict[str, Any] = {"dest": task.dest, "outcome": outcome}
        if outcome != KEPT:
            entry |= {"source": task.source, "stamp": _stamp(task.source)}
        self.entries[task.dest] = entry
        handle.write(json.dumps(entry, ensure_ascii=False) + "\n")  # one write: a line is whole or cut short
        handle.flush()


def _stamp(source: str | None) -> list[int] | None:
    """[size, modification time in ns] of a photo, None when it is missing."""
    if source is None:
        return None
    try:
        stat = os.stat(source)
    except (OSError, TypeError):
        return None
    return [stat.st_size, stat.st_mtime_ns]
