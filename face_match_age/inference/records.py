"""The one result schema: what every mode writes about a face and about two faces compared.

`FaceResult` is one detected face, `PairResult` two photos compared (with its `Verification`). Every mode
writes these records under these names: the pair JSON (infer.py IMG1 IMG2 OUT --json), a batch's
results.jsonl and results.csv (--pairs), --folder's faces.csv and matches.csv, and the Python API
(FaceAnalyzer's dicts are their `to_json()`). A table flattens a record by one rule: a face's field takes the
number of its face as a suffix (`face_1.age` is the column `age_1`), a verification field keeps its name
(`verification.similarity` is `similarity`).

Numbers are held as computed. Each field declares the decimals it is shown with (`digits`), applied only where
a number is written for people: the CSV tables, the console and the pictures. JSON and JSONL, which programs
read, carry every number exactly, so evaluate.py verify ranks pairs by their similarity as computed, with no
second pass over the photos.

The field tables of docs/inference.md are `markdown_tables()`; tests/test_records.py fails when the two differ.
Print them with
    uv run python -c "from face_match_age.inference.records import markdown_tables; print(markdown_tables())"
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

# The layout of the records in the files that are resumed or reused (batch.json and the --folder embedding
# store record it): another layout there is refused with one line, since its rows would carry other names.
# 2: one vocabulary (age, age_std, box, similarity; file_1/file_2) and exact numbers in JSON.
SCHEMA_VERSION = 2


def described(meaning: str, digits: int | None = None, *, default: Any = dataclasses.MISSING) -> Any:
    """A record field with its meaning (docs/inference.md's table) and the decimals it is written with in tables."""
    metadata = {"meaning": meaning, "digits": digits}
    return field(metadata=metadata) if default is dataclasses.MISSING else field(default=default, metadata=metadata)


@dataclass(frozen=True)
class FaceResult:
    """One face MTCNN found in a photo, with the age model's answer for it."""

    box: tuple[int, int, int, int] = described("x1, y1, x2, y2 in the photo's pixels (a table writes `x1 y1 x2 y2`)")
    detection_probability: float = described("MTCNN's confidence that the box holds a face, 0..1", 4)
    faces_found: int = described("faces MTCNN found in the photo; one is chosen by `--face` unless `--all-faces`")
    age: float | None = described(
        "predicted age in years: the mean of the predicted distribution; `null` without an age model", 2, default=None
    )
    age_std: float | None = described(
        "the age's uncertainty in years: the standard deviation of that distribution", 2, default=None
    )
    age_interval: tuple[float, float] | None = described(
        "low and high age of the central 90% of that distribution", 1, default=None
    )

    def to_json(self) -> dict:
        return _json_of(self)


@dataclass(frozen=True)
class Verification:
    """Whether two faces are one person: their cosine similarity against a threshold."""

    is_match: bool = described("`true` when the similarity is above the threshold")
    similarity: float = described("cosine similarity of the two faces' VGGFace2 embeddings, -1..1", 4)
    threshold_used: float = described("the threshold it was judged by (`--threshold`, or the calibration's)", 4)
    threshold_source: dict | None = described(
        "with `--calibration`: the age-gap band whose threshold was used, and why; else `null`", default=None
    )

    def to_json(self) -> dict:
        return _json_of(self)


@dataclass(frozen=True)
class PairResult:
    """Two photos compared: each one's chosen face, the verdict, the age gap, or why there is none."""

    file_1: str = described("the first photo as given: its path, its pairs-CSV cell, or its path inside `--folder`")
    file_2: str = described("the second photo, likewise")
    face_1: FaceResult | None = described("the first photo's face (fields below); `null` when none was found")
    face_2: FaceResult | None = described("the second photo's face; `null` when none was found")
    verification: Verification | None = described("the verdict (fields below); `null` unless both faces were found")
    age_gap: float | None = described("difference of the two predicted ages, years; `null` without ages", 2)
    error: str | None = described("why a photo or its face is missing, else `null`")
    # --all-faces, when a photo holds more than one face: every face and every similarity (absent otherwise)
    faces_1: tuple[FaceResult, ...] | None = described(
        "with `--all-faces`, when a photo holds several faces: every face of the first photo", default=None
    )
    faces_2: tuple[FaceResult, ...] | None = described("likewise, every face of the second photo", default=None)
    similarity_matrix: tuple[tuple[float, ...], ...] | None = described(
        "likewise: the similarity of each face of the first photo (rows) with each of the second", 4, default=None
    )
    best_pair: dict | None = described(
        "likewise: `face_1`, `face_2` (indices into `faces_1`, `faces_2`) and `similarity` of the most similar "
        "faces, which `face_1`, `face_2` and `verification` then describe",
        default=None,
    )

    def to_json(self) -> dict:
        """The record as JSON-ready data, numbers exact; the --all-faces fields only when present."""
        data = _json_of(self)
        for name in ALL_FACES_FIELDS:
            if data[name] is None:
                del data[name]
        return data

    def to_row(self) -> dict:
        """The record flattened for a table (see the module), numbers exact: format them with `cell`."""
        row: dict[str, Any] = {"file_1": self.file_1, "file_2": self.file_2}
        for slot, face in (("1", self.face_1), ("2", self.face_2)):
            row |= {f"{name}_{slot}": None if face is None else getattr(face, name) for name in FACE_FIELDS}
        verification = self.verification
        row |= {name: None if verification is None else getattr(verification, name) for name in VERIFICATION_FIELDS}
        return row | {"age_gap": self.age_gap, "error": self.error}


ALL_FACES_FIELDS = ("faces_1", "faces_2", "similarity_matrix", "best_pair")
FACE_FIELDS = tuple(f.name for f in dataclasses.fields(FaceResult))
VERIFICATION_FIELDS = tuple(f.name for f in dataclasses.fields(Verification))


def _json_of(record) -> dict:
    def plain(value):
        if dataclasses.is_dataclass(value):
            return value.to_json()
        if isinstance(value, (tuple, list)):
            return [plain(item) for item in value]
        return value

    return {f.name: plain(getattr(record, f.name)) for f in dataclasses.fields(record)}


def face_from_json(data: dict | None) -> FaceResult | None:
    """A FaceResult from its to_json() (as results.jsonl or an embedding store holds it)."""
    if data is None:
        return None
    values: dict[str, Any] = {name: data.get(name) for name in FACE_FIELDS}
    values["box"] = tuple(values["box"])
    if values["age_interval"] is not None:
        values["age_interval"] = tuple(values["age_interval"])
    return FaceResult(**values)


def pair_from_json(data: dict) -> PairResult:
    """A PairResult from its to_json() (a line of results.jsonl: the fields around it are left out)."""
    verification = data.get("verification")
    values: dict[str, Any] = {name: data.get(name) for name in ("file_1", "file_2", "age_gap", "error", "best_pair")}
    faces: dict[str, Any] = {name: face_from_json(data.get(name)) for name in ("face_1", "face_2")}
    many: dict[str, Any] = {
        name: tuple(map(face_from_json, data[name])) for name in ("faces_1", "faces_2") if data.get(name)
    }
    matrix = data.get("similarity_matrix")
    return PairResult(
        **values,
        **faces,
        **many,
        verification=None if verification is None else Verification(**verification),
        similarity_matrix=None if matrix is None else tuple(map(tuple, matrix)),
    )


# --- the columns of the tables ---------------------------------------------------------------------------

# Fields and columns that are not a record's: what a file adds around the records, with meaning and digits.
CONTEXT_FIELDS = {
    "pair_index": ("the pair's row in the pairs CSV, from 0", None),
    "label": ("the pairs CSV's label (1 same person, 0 not), when it has one", None),
    "age_model": (
        (
            "`loaded` (`true` or `false`) and `reason`: why no age model was used (`--no-age`, or no checkpoint at the "
            "default `checkpoints/best.ckpt` and no `--ckpt`), else `null`; the ages are `null` when `loaded` is "
            "`false`"
        ),
        None,
    ),
    "models": (
        (
            "the age checkpoint, verification weights, device and options (`precision` as resolved, `channels_last`, "
            "`compile`)"
        ),
        None,
    ),
    "timings_ms": ("time spent reading the photos, loading the models and analysing, milliseconds", None),
    "worker_ranks": ("which `--devices` process analysed each photo", None),
    "file": ("the photo, as its path inside `--folder`'s DIR", None),
    "error": ("in faces.csv: why the photo has no face (unreadable, no face found), else empty", None),
    "cluster": ("the person (identity cluster) the photo belongs to; see clusters.csv", None),
    "similarity_to_reference": ("with `--reference`: its face's similarity with the reference face", 4),
}
# What the JSON files hold around a pair record: before it, and after it.
PAIR_JSON_AFTER = ("age_model", "models", "timings_ms")  # {stem1}_vs_{stem2}_data.json
RESULTS_JSONL_BEFORE, RESULTS_JSONL_AFTER = ("pair_index", "label"), ("age_model", "worker_ranks")  # results.jsonl
# Each table's columns, in order. results.csv: a batch's rows; faces.csv: --folder's photos (plus `cluster`,
# or `similarity_to_reference` with --reference); matches.csv: --folder's pairs.
RESULTS_CSV_COLUMNS = (
    "pair_index",
    "file_1",
    "file_2",
    "label",
    "is_match",
    "similarity",
    "threshold_used",
    "age_1",
    "age_2",
    "age_std_1",
    "age_std_2",
    "age_gap",
    "box_1",
    "box_2",
    "error",
)
FACES_CSV_COLUMNS = ("file", "box", "detection_probability", "faces_found", "age", "age_std", "error")
FACES_CSV_EXTRA = ("cluster", "similarity_to_reference")
MATCHES_CSV_COLUMNS = ("file_1", "file_2", "similarity", "threshold_used", "is_match", "age_1", "age_2", "age_gap")


def column_field(name: str) -> tuple[str, int | None]:
    """(meaning, digits) of a table column: a context column, a pair's or verification's field, or a face's field
    (bare in faces.csv, with its face's suffix in a pair's table). A ValueError for a name the schema lacks."""
    if name in CONTEXT_FIELDS:
        return CONTEXT_FIELDS[name]
    records = {
        **{f.name: f for f in dataclasses.fields(FaceResult)},
        **{f.name: f for f in dataclasses.fields(Verification)},
        **{f.name: f for f in dataclasses.fields(PairResult)},
    }
    stem, _, slot = name.rpartition("_")
    if name not in records and slot in ("1", "2") and stem in FACE_FIELDS:
        name = stem
    if name not in records:
        raise ValueError(f"column {name!r} is not a field of the result schema (face_match_age/inference/records.py)")
    return records[name].metadata["meaning"], records[name].metadata["digits"]


def cell(column: str, value: Any) -> Any:
    """`value` as a table writes it in `column`: empty for null, a box as `x1 y1 x2 y2`, a number rounded to
    its column's digits (as its shortest float: 0.7, not 0.699999988)."""
    if value is None or (isinstance(value, float) and value != value):  # value != value: NaN
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(str(cell(column, item)) for item in value)
    if isinstance(value, bool) or not isinstance(value, float):
        return value
    digits = column_field(column)[1]
    return value if digits is None else round(value, digits)


def table_row(columns: Sequence[str], values: dict) -> list:
    """One table row: `values` of `columns` (missing ones empty), each written by `cell`."""
    return [cell(column, values.get(column)) for column in columns]


# --- docs/inference.md's tables -------------------------------------------------------------------------------------


def _record_table(record: type, title: str) -> list[str]:
    lines = [f"| {title} | meaning |", "| --- | --- |"]
    for f in dataclasses.fields(record):
        digits = f.metadata["digits"]
        shown = f" (tables: {digits} decimal{'s' if digits > 1 else ''})" if digits is not None else ""
        lines.append(f"| `{f.name}` | {f.metadata['meaning']}{shown} |")
    return lines


def _columns_line(name: str, columns: Iterable[str], note: str = "") -> str:
    shown = ", ".join(column if " " in column else f"`{column}`" for column in columns)
    return f"| `{name}` | {shown}{note} |"


def markdown_tables() -> str:
    """docs/inference.md's tables of the result schema: the fields of each record, and the columns of each table."""
    context = [
        "| other field or column | meaning |",
        "| --- | --- |",
        *(f"| `{name}` | {meaning} |" for name, (meaning, _) in CONTEXT_FIELDS.items()),
    ]
    tables = [
        "| file | holds |",
        "| --- | --- |",
        _columns_line("{stem1}_vs_{stem2}_data.json", ["the pair fields", *PAIR_JSON_AFTER]),
        _columns_line(
            "results.jsonl", [*RESULTS_JSONL_BEFORE, "the pair fields", *RESULTS_JSONL_AFTER], ", one line per pair"
        ),
        _columns_line("results.csv", RESULTS_CSV_COLUMNS),
        _columns_line("faces.csv", FACES_CSV_COLUMNS, ", then " + " or ".join(f"`{c}`" for c in FACES_CSV_EXTRA)),
        _columns_line("matches.csv", MATCHES_CSV_COLUMNS),
    ]
    parts = [
        _record_table(PairResult, "pair field"),
        _record_table(Verification, "`verification` field"),
        _record_table(FaceResult, "face field"),
        tables,
        context,
    ]
    return "\n\n".join("\n".join(part) for part in parts)
