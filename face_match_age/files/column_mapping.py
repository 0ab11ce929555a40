"""--columns: which of a CSV's columns holds each name the toolkit reads (`img1=file_a,img2=file_b`).

Light to import: the scripts parse their command line with it before importing torch or pandas.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from face_match_age.command_line import text_type

PAIR_COLUMNS = ("img1", "img2", "label", "age1", "age2")  # a pairs CSV (infer.py --pairs, evaluate.py verify)
LABEL_COLUMNS = ("name", "age", "identity", "year")  # a labels CSV (evaluate.py age/retrieve, data_prep.py csv)


def parse_column_mapping(text: str, names: Sequence[str]) -> dict[str, str]:
    """`img1=file_a,img2=file_b` as {"img1": "file_a", "img2": "file_b"}: for each of the toolkit's `names`
    given, the file's column that holds it. A bad item, a name not in `names`, a name given twice or two
    names given one column raise ValueError, one line."""
    mapping: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        name, equals, column = (piece.strip() for piece in item.partition("="))
        if not equals or not name or not column:
            raise ValueError(f"{item!r} is not NAME=COLUMN; write e.g. {names[0]}=COLUMN,{names[1]}=COLUMN")
        if name not in names:
            raise ValueError(f"{name!r} is not a column name this CSV is read by; use {', '.join(names)}")
        if name in mapping:
            raise ValueError(f"{name} is given twice ({name}={mapping[name]}, {name}={column}); give it once")
        if column in mapping.values():
            given = next(key for key, value in mapping.items() if value == column)
            raise ValueError(f"column {column!r} is given for both {given} and {name}; one column holds one name")
        mapping[name] = column
    return mapping


def add_columns_option(group, names: Sequence[str], what: str, example: str) -> None:
    """--columns on a parser (or an option group) whose `what` ("pairs CSV") is read with `names`."""
    group.add_argument(
        "--columns",
        type=text_type(functools.partial(parse_column_mapping, names=names)),
        metavar="NAME=COLUMN,...",
        help=f"the {what}'s own names for its columns {', '.join(names)} where they differ, e.g. {example}",
    )
