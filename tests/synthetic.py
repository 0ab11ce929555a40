"""Tiny synthetic face-age datasets in the layout data_prep.py writes (folders of crops + CSVs).

Each picture's brightness and the size of a bright square grow with the age, so a model can learn
the age from the picture within a few CPU epochs: training on them shows learning, not memorising."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from config import Config, dataset_paths


def age_picture(age: int, size: int, rng: np.random.Generator) -> Image.Image:
    level = 30 + 2 * age
    pixels = np.clip(rng.normal(level, 12, (size, size, 3)), 0, 255)
    side = max(2, int(size * (0.1 + 0.8 * age / 100)))
    start = (size - side) // 2
    pixels[start : start + side, start : start + side, 0] = 255
    return Image.fromarray(pixels.astype(np.uint8))


def write_split(
    folder: Path, csv_path: Path, ages: list[int], rng: np.random.Generator, size: int, prefix: str
) -> pd.DataFrame:
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for number, age in enumerate(ages):
        name = f"{prefix}_{number:04d}.jpg"
        age_picture(age, size, rng).save(folder / name, quality=95)
        rows.append({"name": name, "age": age, "identity": f"person_{number % 7}"})
    labels = pd.DataFrame(rows)
    labels.to_csv(csv_path, index=False)
    return labels


def make_dataset(root: Path, train: int = 16, val: int = 8, size: int = 96, seed: int = 0) -> Config:
    """Write a dataset under `root` and return a quick CPU config that trains on it."""
    rng = np.random.default_rng(seed)
    train_ages = rng.integers(5, 95, train).tolist()
    val_ages = rng.integers(5, 95, val).tolist()
    write_split(root / "train_images", root / "train.csv", train_ages, rng, size, "train")
    write_split(root / "val_images", root / "val.csv", val_ages, rng, size, "val")
    return Config(
        dataset_dir=root,
        **dataset_paths(root),
        img_size=size,
        pretrained="none",
        batch_size=4,
        num_workers=0,
        max_epochs=2,
        device="cpu",
        log_every_n_steps=1,
        checkpoint_dir=root / "checkpoints",
        log_dir=root / "logs" / "face_age_det",
        logged_sample_faces=4,
        figure_sample_size=8,
    )


def train_args(config: Config, **extra) -> list[str]:
    """The train.py command line that reproduces `config` (plus `extra` options)."""
    options = {
        "--train-dir": config.train_dir,
        "--val-dir": config.val_dir,
        "--train-csv": config.train_csv,
        "--val-csv": config.val_csv,
        "--pretrained": config.pretrained,
        "--batch-size": config.batch_size,
        "--num-workers": config.num_workers,
        "--max-epochs": config.max_epochs,
        "--device": config.device,
        "--log-every-n-steps": config.log_every_n_steps,
        "--ckpt-dir": config.checkpoint_dir,
        "--log-dir": config.log_dir,
        "--img-size": config.img_size,
        **{f"--{k.replace('_', '-')}": v for k, v in extra.items()},
    }
    return [str(part) for option, value in options.items() for part in (option, value)]


def band_calibration() -> dict:
    """A calibration as evaluate.py verify --calibrate writes it: overall threshold 0.11, and 0.2, 0.3, 0.4,
    0.5 for the age-gap bands in order (each measured on 50 pairs), so which threshold judged a pair shows."""
    from face_match_age.match_rule import AGE_GAP_BANDS

    return {
        "target_far": 0.01,
        "overall": {"threshold": 0.11},
        "bands": {
            name: {"threshold": 0.2 + 0.1 * i, "pairs": 50, "fallback": False}
            for i, (name, _, _) in enumerate(AGE_GAP_BANDS)
        },
    }


def write_band_calibration(folder: Path) -> Path:
    """band_calibration() written as folder/calibration.json, the file --calibration takes."""
    path = folder / "calibration.json"
    path.write_text(json.dumps(band_calibration()))
    return path
