"""The one CSV reader for user-supplied tables (labels, pairs): every failure is one clear error.

Line numbers are as a spreadsheet shows them: the header is line 1, the first row line 2, and a blank
line keeps its number (it is dropped, not renumbered). A row's index in the table is its line minus 2;
`csv_line` turns one into the other.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

FIRST_ROW_LINE = 2  # the header is line 1
SHOWN_LINES = 5  # lines quoted in an error: enough to spot a pattern without flooding the terminal
SAVE_AS_CSV = "save it as comma-separated UTF-8 text with a header line"


def csv_line(index: int) -> int:
    """The 1-based line (header = 1) of the row read_table gave `index`."""
    return int(index) + FIRST_ROW_LINE


def read_table(
    path: Path,
    required: tuple[str, ...],
    error: type[Exception],
    what: str,
    numbers: tuple[str, ...] = (),
    columns: Mapping[str, str] | None = None,
    **read_options,
) -> pd.DataFrame:
    """`path` as a DataFrame holding the `required` columns and at least one row; otherwise raises
    `error` saying which file, what is wrong, where and what to do. `what` names the table ("labels
    file"). Column names are stripped of surrounding spaces (`name, age` has an `age` column); columns
    in `numbers` that are present must hold numbers or nothing. Rows are indexed by line (`csv_line`).
    `columns` maps the names the caller reads to the file's own ({"img1": "file_a"}, from --columns): the
    table has the caller's names, and every other name (`required`, `numbers`, `dtype`) is the caller's."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} {path} does not exist; check the path")
    try:
        header = pd.read_csv(path, nrows=0).columns
        names = _renamed(path, what, [str(column).strip() for column in header], columns or {}, error)
        _refuse_repeated_names(path, what, names, error)
        # read_options name the columns as stripped; pandas matches them against the header as written
        if isinstance(read_options.get("dtype"), dict):
            raw = dict(zip(names, header))
            read_options["dtype"] = {raw.get(name, name): kind for name, kind in read_options["dtype"].items()}
        lines = _row_lines(path, what, len(names), error)
        table = pd.read_csv(path, index_col=False, **read_options).set_axis(names, axis=1)
        # after a blank line the rows' lines are not consecutive; should csv and pandas disagree on the rows
        # (they should not) the rows are taken as consecutive lines
        if len(lines) == len(table) and not lines.equals(pd.RangeIndex(FIRST_ROW_LINE, len(table) + FIRST_ROW_LINE)):
            table.index = lines - FIRST_ROW_LINE
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, csv.Error) as cause:
        raise error(f"{what} {path} is not a readable CSV ({_one_line(cause)}); {SAVE_AS_CSV}") from None
    except OSError as cause:
        raise error(f"{what} {path} cannot be read ({cause.strerror or cause}); check its permissions") from None
    missing = [column for column in required if column not in names]
    if missing:
        raise error(
            f"{what} {path} lacks the column(s) {', '.join(sorted(missing))}; it needs {', '.join(required)} "
            f"and has {', '.join(_file_names(names, columns or {})) or 'none'}: name them so on line 1, or map "
            f"them with --columns {missing[0]}=COLUMN,..."
        )
    if table.empty:
        raise error(f"{what} {path} has a header but no rows; add a row per item below it")
    for column in (c for c in numbers if c in table.columns):
        _require_numbers(table, column, path, what, error)
    return table


def _renamed(path: Path, what: str, names: list[str], columns: Mapping[str, str], error) -> list[str]:
    """The header `names` with each file column of `columns` under the caller's name for it."""
    absent = [f"{name}={column}" for name, column in columns.items() if column not in names]
    if absent:
        raise error(
            f"{what} {path} has no column {', '.join(c.split('=', 1)[1] for c in absent)} (--columns "
            f"{', '.join(absent)}); its columns are {', '.join(names) or 'none'}"
        )
    clashing = [name for name, column in columns.items() if name in names and name not in columns.values()]
    if clashing:  # the file's own `img1` and the column mapped to img1: which one is meant cannot be told
        raise error(
            f"{what} {path}: --columns maps {', '.join(f'{columns[n]} to {n}' for n in clashing)}, but line 1 "
            f"names a column {', '.join(clashing)} too; rename one of them on line 1"
        )
    file_to_name = {column: name for name, column in columns.items()}
    return [file_to_name.get(name, name) for name in names]


def _file_names(names: list[str], columns: Mapping[str, str]) -> list[str]:
    """The header as the file writes it, from the caller's names."""
    return [columns.get(name, name) for name in names]


def _refuse_repeated_names(path: Path, what: str, names: list[str], error: type[Exception]) -> None:
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:  # e.g. `age` and ` age`: which one the user means cannot be told
        raise error(
            f"{what} {path}: line 1 names the column(s) {', '.join(repeated)} more than once "
            "(spaces around names are ignored); keep one of each"
        )


def _row_lines(path: Path, what: str, columns: int, error: type[Exception]) -> pd.Index:
    """The line of each row pandas reads: the records after the header, blank ones skipped as pandas skips
    them; csv counts a quoted field spanning lines as one record, as a spreadsheet does. A row longer than
    the header is refused: pandas would silently take its first cell as a row label and shift the others."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        records = [(line, len(record)) for line, record in enumerate(csv.reader(handle), start=1) if not _blank(record)]
    lines = [line for line, _ in records[1:]]
    long = [(line, fields) for line, fields in records[1:] if fields > columns]
    if long:
        shown = ", ".join(f"line {line}: {fields}" for line, fields in long[:SHOWN_LINES])
        raise error(
            f"{what} {path}: {len(long)} row(s) have more cells than the {columns} columns line 1 names "
            f"({shown}); remove the extra commas, or quote a value that holds one"
        )
    return pd.Index(lines, dtype="int64")


def _blank(record: list[str]) -> bool:
    """A line pandas skips: empty or spaces only (`,` is a row of empty cells, and kept)."""
    return len(record) <= 1 and not "".join(record).strip()


def _require_numbers(table: pd.DataFrame, column: str, path: Path, what: str, error: type[Exception]) -> None:
    """Make `column` numbers (NaN where empty), or name its first offending lines: not a bare `could not
    convert string to float` later, from whichever code first does arithmetic on it."""
    given, numbers = table[column], pd.to_numeric(table[column], errors="coerce")
    blank = given.isna() | (given.astype(str).str.strip() == "")
    bad = table.index[numbers.isna() & ~blank]
    if len(bad):
        shown = ", ".join(f"line {csv_line(i)}: {given[i]!r}" for i in bad[:SHOWN_LINES])
        more = f" and {len(bad) - SHOWN_LINES} more" if len(bad) > SHOWN_LINES else ""
        raise error(
            f"{what} {path}, column {column}: {len(bad)} value(s) are not numbers ({shown}{more}); "
            "write a number there or leave the cell empty"
        )
    table[column] = numbers  # a cell of spaces is empty, as the check above took it


def _one_line(cause: BaseException) -> str:
    return " ".join(str(cause).split()) or type(cause).__name__
