"""Errors as a user sees them on stderr: `error: what failed, for which file, what to do`.

Most are one line: library errors (torch's loader) run over many lines, and a script prints every
failure through `print_error`, so a log search or a test can take it whole. An error laid out on
lines on purpose (the missing-weights message lists file, folder, URL, cause and what to do, one per
line) is a `MultiLineError`, and keeps its lines, never cut.
"""

from __future__ import annotations

import sys


class MultiLineError(Exception):
    """An error whose message is laid out on several lines on purpose: a first line saying what failed,
    then one detail per line. print_error prints it as written instead of joining it into one line."""


def error_line(error: BaseException | str) -> str:
    """`error: ` and the message with every run of whitespace, newlines included, made one space."""
    return "error: " + " ".join(str(error).split())


def error_text(error: BaseException | str) -> str:
    """What print_error writes: `error_line(error)`, or for a MultiLineError `error: ` and its lines as
    written (blank ones and trailing spaces dropped)."""
    if not isinstance(error, MultiLineError):
        return error_line(error)
    lines = [line.rstrip() for line in str(error).strip().splitlines() if line.strip()]
    return "error: " + "\n".join(lines)


def print_error(error: BaseException | str) -> None:
    """Print `error_text(error)` to stderr."""
    print(error_text(error), file=sys.stderr)


def error_summary(error: BaseException) -> str:
    """`Type: first line of the message`, for quoting a library's error inside one of ours: torch's loader
    errors run over many lines, and only the first says what went wrong."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def out_of_memory_message(error: BaseException, doing: str, advice: str) -> str:
    """One line for a device that ran out of memory (torch.OutOfMemoryError): while `doing` what, and the
    `advice`, e.g. "lower --batch-size (now 256)". torch's own text runs over several lines of allocator
    advice; its first says how much was asked for."""
    return f"out of memory on the device while {doing} ({error_summary(error)}); {advice}"
