"""Errors as a user sees them: one line on stderr, `error: what failed, for which file, what to do`.

Messages may span lines (the missing-weights message lists file, folder and url), and library errors
(torch's loader) run over many; a script prints them through `print_error` so every failure is one line
that a log search or a test can take whole.
"""

from __future__ import annotations

import sys


def error_line(error: BaseException | str) -> str:
    """`error: ` and the message with every run of whitespace, newlines included, made one space."""
    return "error: " + " ".join(str(error).split())


def print_error(error: BaseException | str) -> None:
    """Print `error_line(error)` to stderr."""
    print(error_line(error), file=sys.stderr)


def error_summary(error: BaseException) -> str:
    """`Type: first line of the message`, for quoting a library's error inside one of ours: torch's loader
    errors run over many lines, and only the first says what went wrong."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
