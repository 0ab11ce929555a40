"""Face-age data: a validated folder + CSV Dataset and the LightningDataModule that serves it.

A dataset is a folder of face crops plus a CSV with columns `name` (file name inside the folder) and
`age` (whole years 0..100); other columns, such as `identity`, are kept. data_prep.py writes this
layout, and a custom dataset only needs the same two columns.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

import lightning as L
import pandas as pd
import torch
from lightning.fabric.utilities.seed import pl_worker_init_function
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from config import MAX_AGE, MIN_AGE, Config
from face_match_age.detection.imaging import ImageLoadError, face_to_tensor, load_image
from face_match_age.files.csv_tables import csv_line, read_table
from face_match_age.processes import start_helper_process

SHOWN_OFFENDERS = 5  # enough to spot a pattern without flooding the terminal


class LabelsError(ValueError):
    """A labels CSV that cannot be trained on; the message lists the first offending rows."""


class UnreadableImageError(ImageLoadError):
    """A listed image that cannot be read; the message names the file and its CSV line. Read the message with
    `raised_message`: from a DataLoader worker process the error arrives wrapped in the worker's traceback."""


def raised_message(error: BaseException) -> str:
    """The message `error` was raised with, also when a DataLoader worker raised it: torch re-creates a worker's
    exception in the main process with the worker's formatted traceback as its message (ExceptionWrapper in
    torch/_utils.py), whose last line is `module.Type: message`."""
    lines = str(error).strip().splitlines()
    if len(lines) <= 1:
        return lines[0] if lines else type(error).__name__
    return lines[-1].split(": ", 1)[-1]


def read_labels(csv_path: Path, image_dir: Path, columns: dict[str, str] | None = None) -> pd.DataFrame:
    """The rows of `csv_path`, checked against `image_dir`: ages whole and within 0..100, names unique,
    every file present. Any problem raises one LabelsError naming the first offenders. `columns` maps
    name and age to the file's own column names (read_table)."""
    csv_path, image_dir = Path(csv_path), Path(image_dir)
    if not image_dir.is_dir():
        raise LabelsError(f"image folder {image_dir} does not exist")
    labels = read_table(csv_path, ("name", "age"), LabelsError, "labels file", columns=columns, dtype={"name": str})
    problems = list(_label_problems(labels, image_dir))
    if problems:
        raise LabelsError(f"{csv_path} has problems:\n  " + "\n  ".join(problems))
    return labels.assign(age=pd.to_numeric(labels["age"]).astype(int)).reset_index(drop=True)


def _label_problems(labels: pd.DataFrame, image_dir: Path):
    ages = pd.to_numeric(labels["age"], errors="coerce")
    bad_age = ages.isna() | (ages % 1 != 0) | (ages < MIN_AGE) | (ages > MAX_AGE)
    if bad_age.any():
        yield _offenders(f"ages that are not whole numbers in {MIN_AGE}..{MAX_AGE}", labels[bad_age], "age")
    blank = labels["name"].isna() | (labels["name"].astype(str).str.strip() == "")
    if blank.any():
        yield _offenders("rows without a file name", labels[blank], "name")
    duplicated = labels["name"].duplicated(keep=False) & ~blank
    if duplicated.any():
        yield _offenders("duplicate file names", labels[duplicated], "name")
    present = labels["name"].where(~blank, "").map(lambda name: bool(name) and (image_dir / name).is_file())
    missing = ~present & ~blank
    if missing.any():
        yield _offenders(f"files missing from {image_dir}", labels[missing], "name")


def _offenders(what: str, rows: pd.DataFrame, column: str) -> str:
    shown = ", ".join(
        f"line {csv_line(index)}: {_shown(rows.at[index, column])}" for index in rows.index[:SHOWN_OFFENDERS]
    )
    more = f" and {len(rows) - SHOWN_OFFENDERS} more" if len(rows) > SHOWN_OFFENDERS else ""
    return f"{len(rows)} {what} ({shown}{more})"


def _shown(value) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def training_augmentation(img_size: int) -> v2.Compose:
    """Random crop (80-100% of the face), mirror, tilt up to 10 degrees and colour jitter, on uint8 pixels;
    the shared standardisation (imaging.face_to_tensor) follows."""
    return v2.Compose(
        [
            v2.RandomResizedCrop(img_size, scale=(0.8, 1.0), ratio=(0.9, 1.1), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomRotation(10),
            v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02),
        ]
    )


class FaceAgeDataset(Dataset):
    """(face tensor 3 x img_size x img_size, age, row index) for each row of a labels CSV."""

    def __init__(
        self,
        image_dir: Path,
        csv_path: Path,
        img_size: int = 160,
        augment: bool = False,
        columns: dict[str, str] | None = None,
    ) -> None:
        self.image_dir, self.csv_path = Path(image_dir), Path(csv_path)
        self.labels = read_labels(csv_path, self.image_dir, columns)
        # Plain lists: cheaper than pandas row access in every worker, for every sample.
        self._names = self.labels["name"].tolist()
        self._ages = self.labels["age"].tolist()
        self.img_size = img_size
        self.augmentation = training_augmentation(img_size) if augment else None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        try:
            image = load_image(self.image_dir / self._names[index])
        except ImageLoadError as error:
            # +2: the CSV line as an editor shows it (header first, counting from 1)
            raise UnreadableImageError(f"{error} (line {index + 2} of {self.csv_path})") from None
        pixels = TF.pil_to_tensor(image)
        if self.augmentation is not None:
            pixels = self.augmentation(pixels)
        return face_to_tensor(pixels, self.img_size), torch.tensor(self._ages[index]), index


class FaceAgeDataModule(L.LightningDataModule):
    """Train (augmented, shuffled) and validation (deterministic) loaders from the config's folders and CSVs."""

    def __init__(self, config: Config, pin_memory: bool = False) -> None:
        super().__init__()
        self.config = config
        self.pin_memory = pin_memory
        data_fields = ("train_dir", "val_dir", "train_csv", "val_csv", "img_size", "batch_size", "num_workers", "seed")
        # Logged to TensorBoard beside the model's hyper-parameters; strings keep checkpoints weights_only-safe.
        self.save_hyperparameters({name: value for name, value in config.to_dict().items() if name in data_fields})
        self.train_set: FaceAgeDataset | None = None
        self.val_set: FaceAgeDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        c = self.config
        if self.train_set is None and stage in (None, "fit"):
            self.train_set = FaceAgeDataset(c.train_dir, c.train_csv, c.img_size, augment=True)
        if self.val_set is None and stage in (None, "fit", "validate"):
            self.val_set = FaceAgeDataset(c.val_dir, c.val_csv, c.img_size, augment=False)

    def train_dataloader(self) -> DataLoader:
        return self._loader(_ready(self.train_set), shuffle=True, drop_last=self._single_sample_last_batch())

    def val_dataloader(self) -> DataLoader:
        return self._loader(_ready(self.val_set), shuffle=False, drop_last=False)

    def _loader(self, dataset: FaceAgeDataset, shuffle: bool, drop_last: bool) -> DataLoader:
        workers = self.config.num_workers
        return DataLoader(
            dataset,
            batch_size=self.config.batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=self.pin_memory,
            worker_init_fn=self._worker_init(),
        )

    def _worker_init(self) -> functools.partial:
        # Lightning adds its own worker seeding only to a loader without a worker_init_fn; it is kept here, with
        # the same rank and the same switch (seed_everything(workers=True) sets PL_SEED_WORKERS), so that
        # augmentation stays reproducible.
        rank = self.trainer.global_rank if self.trainer is not None else 0
        seeded = bool(int(os.environ.get("PL_SEED_WORKERS", "0")))
        return functools.partial(start_loader_worker, rank=rank, seeded=seeded)

    def _single_sample_last_batch(self) -> bool:
        # BatchNorm cannot train on a batch of one, so only such a last batch is dropped.
        world_size = self.trainer.world_size if self.trainer is not None else 1
        per_rank = math.ceil(len(_ready(self.train_set)) / world_size)
        return per_rank % self.config.batch_size == 1


def _ready(dataset: FaceAgeDataset | None) -> FaceAgeDataset:
    if dataset is None:  # a loader asked for before setup() read its data
        raise RuntimeError("FaceAgeDataModule.setup() has not read this dataset yet")
    return dataset


def start_loader_worker(worker_id: int, rank: int, seeded: bool) -> None:
    """A DataLoader worker's start: a stop that reaches every process is the main process's to handle (it saves
    last.ckpt), and the worker is seeded as Lightning would seed it."""
    start_helper_process()
    if seeded:
        pl_worker_init_function(worker_id, rank=rank)
