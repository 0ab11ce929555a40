"""The crop-and-resize stage of data_prep.py: one photo in, one 160x160 face JPEG out (or a reason).

With detection, every photo goes through the same MTCNN crop as inference (faces.detect_faces and the
configured face-selection rule), so training sees exactly what inference sees. Without it
(--no-detect) the dataset's own crop is centre-squared and resized. Each output is written
atomically, so an interrupted run leaves only whole files, and a rerun skips them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import torch
from PIL import Image, ImageOps

from config import Config
from faces import build_face_detector, detect_faces_batch, select_face
from imaging import ImageLoadError, load_image

KEPT = "kept"
JPEG_QUALITY = 95  # training crops: keep detail, the files are small anyway
PHOTOS_PER_CHUNK = 16  # photos read and detected together: enough to batch MTCNN, little lost on a crash


@dataclass(frozen=True)
class CropTask:
    source: str  # photo to read
    dest: str  # face JPEG to write


def crop_chunk(tasks: list[CropTask], config: Config, detector=None) -> list[tuple[CropTask, str]]:
    """(task, KEPT or why the photo was dropped) for a few photos; same-size photos share MTCNN calls."""
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
            _save_atomically(ImageOps.fit(image, (config.img_size, config.img_size), Image.BILINEAR), Path(task.dest))
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
    tmp = dest.with_name(f".{dest.name}.tmp")
    face.save(tmp, format="JPEG", quality=JPEG_QUALITY)
    os.replace(tmp, dest)


def run_crops(tasks: list[CropTask], config: Config, detect: bool, workers: int, device: str = "cpu"
              ) -> Iterator[tuple[CropTask, str]]:
    """(task, outcome) for every task, as chunks finish; over `workers` processes when more than one."""
    chunks = [tasks[start:start + PHOTOS_PER_CHUNK] for start in range(0, len(tasks), PHOTOS_PER_CHUNK)]
    if workers <= 1:
        detector = build_face_detector(config, device) if detect else None
        for chunk in chunks:
            yield from crop_chunk(chunk, config, detector)
        return
    context = torch.multiprocessing.get_context("spawn")  # no fork: torch and MTCNN state do not survive it
    with context.Pool(workers, initializer=_init_worker, initargs=(config, detect)) as pool:
        for outcomes in pool.imap_unordered(_crop_in_worker, chunks):
            yield from outcomes


_worker_state: dict = {}


def _init_worker(config: Config, detect: bool) -> None:
    torch.set_num_threads(1)  # the pool is the parallelism; threads per worker would only fight
    _worker_state["config"] = config
    _worker_state["detector"] = build_face_detector(config, "cpu") if detect else None


def _crop_in_worker(chunk: list[CropTask]) -> list[tuple[CropTask, str]]:
    return crop_chunk(chunk, _worker_state["config"], _worker_state["detector"])


class CropLog:
    """The outcome of every photo already processed, appended as they finish, so an interrupted run
    continues where it stopped (kept photos are also recognised by their output file)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.outcomes: dict[str, str] = {}
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:  # the last line of a killed run may be cut short
                    continue
                self.outcomes[entry["dest"]] = entry["outcome"]

    def pending(self, tasks: Iterable[CropTask]) -> list[CropTask]:
        return [t for t in tasks if t.dest not in self.outcomes and not Path(t.dest).exists()]

    def outcome(self, task: CropTask) -> str:
        return KEPT if Path(task.dest).exists() else self.outcomes.get(task.dest, "not processed")

    def record(self, handle, task: CropTask, outcome: str) -> None:
        self.outcomes[task.dest] = outcome
        handle.write(json.dumps({"dest": task.dest, "outcome": outcome}, ensure_ascii=False) + "\n")
        handle.flush()
