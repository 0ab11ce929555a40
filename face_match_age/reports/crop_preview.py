"""data_prep.py's preview sheets: a random sample of each split's crops with their labels, so a bad crop (a
missed face, a wrong age) is seen before training rather than after.

A sheet is drawn from the split's CSV and crops alone, with a fixed seed, so the same prepared folder gives
the same bytes, and a file already holding them is not written again (a finished preparation run again
changes nothing). Its size is bounded: at most PREVIEW_TILES crops, whatever the dataset's size."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

from face_match_age.files.output_files import write_atomically
from face_match_age.reports.contact_sheet import MAX_TILES, Tile, contact_sheet

PREVIEW_TILES = MAX_TILES
SPLITS = ("train", "val")


def preview_path(out_dir: Path, split: str) -> Path:
    return out_dir / f"preview_{split}.jpg"


def save_split_previews(out_dir: Path, seed: int) -> list[Path]:
    """Write out_dir/preview_train.jpg and preview_val.jpg from out_dir's <split>.csv and <split>_images/."""
    written = []
    for split in SPLITS:
        table = pd.read_csv(out_dir / f"{split}.csv", dtype={"name": str, "identity": str}, keep_default_na=False)
        sample = sample_rows(table, PREVIEW_TILES, seed)
        title = f"{split}: {len(sample)} of {len(table)} crops, a random sample (seed {seed}), youngest first"
        tiles = crop_tiles(sample, out_dir / f"{split}_images")
        written.append(
            _write_if_changed(contact_sheet(tiles, title, max_tiles=PREVIEW_TILES), preview_path(out_dir, split))
        )
    return written


def sample_rows(table: pd.DataFrame, limit: int, seed: int) -> pd.DataFrame:
    """At most `limit` rows drawn with `seed`, youngest first (an age label far from its neighbours' faces
    stands out)."""
    sample = table.sample(n=min(limit, len(table)), random_state=seed)
    return sample.sort_values(["age", "name"], kind="stable")


def crop_tiles(rows: pd.DataFrame, folder: Path) -> list[Tile]:
    """One tile per row: its crop from `folder` (an empty square when it cannot be read), captioned with the
    file name, age and identity from the row."""
    tiles = []
    row: Any  # pandas-stubs types a row's fields as any scalar; the labels' name and identity are str
    for row in rows.itertuples(index=False):
        tiles.append(Tile([_open(folder / row.name)], [row.name, f"age {row.age:g}", _identity(row.identity)]))
    return tiles


def _identity(identity: str) -> str:
    return f"identity {identity}" if identity else "no identity"


def _open(path: Path) -> Image.Image | None:
    try:
        with Image.open(path) as crop:
            return crop.convert("RGB")  # crops are data_prep's own upright JPEGs: no EXIF to apply
    except OSError:  # gone, or not an image any more: the sheet still shows the others
        return None


def _write_if_changed(sheet: Image.Image, path: Path) -> Path:
    encoded = io.BytesIO()
    sheet.save(encoded, format="JPEG", quality=90)
    if path.is_file() and path.read_bytes() == encoded.getvalue():
        return path
    return write_atomically(path, lambda tmp: tmp.write_bytes(encoded.getvalue()))
