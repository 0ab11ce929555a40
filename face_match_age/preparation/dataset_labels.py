"""Labels of the public face-age datasets, read from their own metadata or file names.

Each reader takes the folder an archive unpacked into and returns `Labels`: one row per usable photo
(`source`: path relative to that folder, `age`, `identity` or None) and the count of dropped records
by reason. The formats, as each dataset publishes them:

- IMDB-WIKI (imdb_crop, wiki_crop): a MATLAB `<kind>.mat` beside folders 00..99, one record per photo with
  full_path, dob (a MATLAB serial date), photo_taken (a year), face_score and second_face_score, and, for imdb,
  celeb_id (read_imdb_wiki);
- CACD2000: `<age>_<name>_<number>.jpg` (CACD_NAME); UTKFace: `<age>_<gender>_<race>_<date>.jpg.chip.jpg`
  (UTKFACE_NAME, no identity); FG-NET: `<person>A<age>[letter].jpg` (FGNET_NAME);
- a user's own folder of photos and a CSV of name, age and optionally identity (read_user_csv).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import pandas as pd

from face_match_age.files.csv_tables import csv_line, read_table
from face_match_age.settings import MAX_AGE, MIN_AGE

CACD_NAME = re.compile(r"^(\d+)_(.+)_(\d{4})\.jpg$", re.IGNORECASE)
UTKFACE_NAME = re.compile(r"^(\d+)_([01])_([0-4])_(\d+)\.jpg\.chip\.jpg$")
FGNET_NAME = re.compile(r"^(\d{3})[Aa](\d{2})([a-z]?)\.(jpg|JPG)$")
MATLAB_TO_PYTHON_ORDINAL = 366  # MATLAB datenum 1 is 1 Jan year 0; Python's ordinal 1 is 1 Jan year 1


class MetadataError(ValueError):
    """Metadata that cannot be read at all (as opposed to single bad records, which are dropped)."""


@dataclass
class Labels:
    rows: list[dict] = field(default_factory=list)  # source, age, identity
    dropped: Counter = field(default_factory=Counter)
    has_identity: bool = True

    def keep(self, source: str, age: int, identity: str | None) -> None:
        if not MIN_AGE <= age <= MAX_AGE:
            self.dropped["age outside 0..100"] += 1
        else:
            self.rows.append({"source": source, "age": int(age), "identity": identity})

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=["source", "age", "identity"])


def read_labels(
    dataset: str,
    root: Path,
    min_face_score: float = 1.0,
    user_csv: Path | None = None,
    columns: dict[str, str] | None = None,
) -> Labels:
    """Labels of `dataset` unpacked under `root` (for "csv": the photos folder and `user_csv`, whose columns
    `columns` maps as read_table does)."""
    readers = {
        "imdb": lambda: read_imdb_wiki(root, "imdb", min_face_score),
        "wiki": lambda: read_imdb_wiki(root, "wiki", min_face_score),
        "cacd": lambda: read_by_name(root, CACD_NAME, _cacd_fields),
        "utkface": lambda: read_by_name(root, UTKFACE_NAME, _utkface_fields, has_identity=False),
        "fgnet": lambda: read_by_name(root, FGNET_NAME, _fgnet_fields),
        "csv": lambda: read_user_csv(root, user_csv, columns),
    }
    return readers[dataset]()


def matlab_age(dob: float, photo_taken: int) -> int | None:
    """Age when the photo was taken, assumed mid-year, from a MATLAB serial birth date; None if invalid."""
    if not math.isfinite(dob) or not math.isfinite(photo_taken):
        return None
    ordinal = int(dob) - MATLAB_TO_PYTHON_ORDINAL
    if ordinal < 1:
        return None
    birth = date.fromordinal(ordinal)
    return int(photo_taken) - birth.year - (1 if birth.month >= 7 else 0)


def read_imdb_wiki(root: Path, kind: str, min_face_score: float) -> Labels:
    """IMDB-WIKI: `<kind>.mat` beside the 00..99 folders; kept when the face score is high enough, no
    second face was seen and the age is 0..100. Identity: celeb_id (imdb) or the person id in the name."""
    import scipy.io

    mat_path = root / f"{kind}.mat"
    try:
        record = scipy.io.loadmat(mat_path)[kind][0, 0]
    except Exception as error:  # noqa: BLE001  scipy raises its own MatReadError besides OS and format errors
        raise MetadataError(
            f"cannot read {mat_path} as IMDB-WIKI metadata ({type(error).__name__}: {error}); is the archive complete?"
        ) from None
    column = lambda name: record[name][0]  # noqa: E731 (each field is a 1 x N row)
    paths = [str(cell[0]) if len(cell) else "" for cell in column("full_path")]
    celeb_ids = column("celeb_id") if "celeb_id" in record.dtype.names else None
    labels = Labels()
    for index, (path, dob, taken, score, second) in enumerate(
        zip(paths, column("dob"), column("photo_taken"), column("face_score"), column("second_face_score"))
    ):
        if not math.isfinite(score):
            labels.dropped["no face found by the dataset"] += 1
        elif score < min_face_score:
            labels.dropped[f"face_score below {min_face_score}"] += 1
        elif math.isfinite(second):
            labels.dropped["second face in the photo"] += 1
        elif (age := matlab_age(float(dob), taken)) is None:
            labels.dropped["invalid birth date"] += 1
        else:
            identity = str(int(celeb_ids[index])) if celeb_ids is not None else Path(path).name.split("_")[0]
            labels.keep(path, age, identity)
    return labels


def read_by_name(root: Path, pattern: re.Pattern, fields, has_identity: bool = True) -> Labels:
    """Datasets whose age (and identity) are in the file name; names that do not parse are dropped."""
    labels = Labels(has_identity=has_identity)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        match = pattern.match(path.name)
        if match is None:
            labels.dropped["file name without a readable age"] += 1
            continue
        age, identity = fields(match)
        labels.keep(str(path.relative_to(root)), age, identity if has_identity else None)
    return labels


def _cacd_fields(match: re.Match) -> tuple[int, str]:
    return int(match.group(1)), match.group(2)


def _utkface_fields(match: re.Match) -> tuple[int, None]:
    return int(match.group(1)), None


def _fgnet_fields(match: re.Match) -> tuple[int, str]:
    return int(match.group(2)), match.group(1)


def output_name(source: str) -> str:
    """A flat file name for a photo's crop (its relative path with / replaced, as .jpg). Two sources can
    share one (`sub/q.jpg` and `sub_q.jpg`, `x.png` and `x.jpg`): read_user_csv refuses such rows."""
    return Path(source.replace("/", "_").replace("\\", "_")).with_suffix(".jpg").name


def read_user_csv(images: Path, csv_path: Path | None, columns: dict[str, str] | None = None) -> Labels:
    """A user's own folder of photos with a CSV of name, age and optionally identity. Names must be paths
    inside `images`, and no two usable rows may share a crop file; otherwise MetadataError names the lines
    (before anything is cropped). A row with an empty identity is a person of its own."""
    if csv_path is None:
        raise MetadataError("--dataset csv needs --csv FILE (columns name, age, optionally identity)")
    table = read_table(
        csv_path, ("name", "age"), MetadataError, "labels file", columns=columns, dtype={"name": str, "identity": str}
    )
    lines = [csv_line(index) for index in table.index]
    unsafe = [(line, name, why) for line, name in zip(lines, table["name"]) if (why := _unsafe_name(name))]
    if unsafe:
        listed = "; ".join(
            f"line {line} {name if isinstance(name, str) else ''!r}: {why}" for line, name, why in unsafe[:5]
        )
        raise MetadataError(
            f"{csv_path}: {len(unsafe)} name(s) are not paths inside --images {images} ({listed}"
            f"{'; ...' if len(unsafe) > 5 else ''}); fix those rows and run again"
        )
    labels = Labels(has_identity="identity" in table.columns)
    crop_of: dict[str, list[tuple[int, str]]] = {}
    row: Any  # pandas-stubs types a row's fields as any scalar; name and identity were read as str (dtype above)
    for line, row in zip(lines, table.itertuples(index=False)):
        age = pd.to_numeric(row.age, errors="coerce")
        if pd.isna(age) or age % 1:
            labels.dropped["age not a whole number"] += 1
        elif not (images / row.name).is_file():
            labels.dropped["file missing"] += 1
        else:
            identity = getattr(row, "identity", None) if labels.has_identity else None
            labels.keep(row.name, int(age), None if pd.isna(identity) or not str(identity).strip() else identity)
            # casefold: on Windows and macOS file systems Q.jpg and q.jpg are one file
            crop_of.setdefault(output_name(row.name).casefold(), []).append((line, row.name))
    clashes = [rows for rows in crop_of.values() if len(rows) > 1]
    if clashes:
        listed = "; ".join(
            " and ".join(f"line {line} {name!r}" for line, name in rows) + f" -> {output_name(rows[0][1])}"
            for rows in clashes[:5]
        )
        raise MetadataError(
            f"{csv_path}: {sum(map(len, clashes))} rows would share a crop file, and one crop cannot "
            f"carry two labels ({listed}{'; ...' if len(clashes) > 5 else ''}); remove the duplicate "
            "rows or rename the photos so their names differ by more than '/' vs '_' or the extension"
        )
    return labels


def _unsafe_name(name) -> str | None:
    """Why a CSV name cannot be a photo inside the images folder, or None."""
    if not isinstance(name, str) or not name.strip():
        return "blank name"
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute() or name.startswith(("/", "\\")):
        return "absolute path"
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        return "'..' leads out of the folder"
    return None
