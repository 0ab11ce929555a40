"""The one CSV reader for user-supplied tables (labels, pairs): every failure is one clear error."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def read_table(
    path: Path, required: tuple[str, ...], error: type[Exception], what: str, **read_options
) -> pd.DataFrame:
    """`path` as a DataFrame holding the `required` columns and at least one row; otherwise raises
    `error` saying which file, what is wrong and (for columns) what it needs. `what` names the table."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} {path} does not exist")
    try:
        table = pd.read_csv(path, **read_options)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as cause:
        raise error(f"{path} is not a readable CSV ({cause})") from None
    missing = set(required) - set(table.columns)
    if missing:
        raise error(
            f"{path} lacks the column(s) {', '.join(sorted(missing))}; it needs {', '.join(required)} "
            f"and has {', '.join(map(str, table.columns)) or 'none'}"
        )
    if table.empty:
        raise error(f"{path} has a header but no rows")
    return table
