"""The exit codes of every script and of the `face-match-age` command, defined once: the same failure ends
with the same code whatever the script (infer.py, train.py, evaluate.py, data_prep.py, model.py). The
docs/exit-codes.md's table is this enum, row for row (tests/test_vocabulary.py compares them).

Imports nothing heavy: every script's --help lists these codes before torch is imported.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """A script's exit status; `meaning` is its row in docs/exit-codes.md's table and in every --help."""

    OK = 0
    UNEXPECTED = 1  # Python's own code for an uncaught exception: no script returns it
    USAGE = 2  # argparse's code for a bad command line
    INPUT = 3
    NO_FACE = 4
    OUTPUT = 5
    MODEL = 6
    PARTIAL = 7
    OUT_OF_MEMORY = 8
    CHECK_FAILED = 9
    INTERRUPTED = 130  # what a shell reports for a process ended by SIGINT (128 + 2)
    TERMINATED = 143  # the same for SIGTERM (128 + 15)

    @property
    def meaning(self) -> str:
        return MEANINGS[self]


MEANINGS = {
    ExitCode.OK: "done (evaluate.py leakage: no person is in both sets)",
    ExitCode.UNEXPECTED: "an unexpected error, shown with a traceback: a bug to report (Python's own code; no script "
    "returns it)",
    ExitCode.USAGE: "bad command line: an unknown option, a bad value, options that do not go together, an unusable "
    "--config file, or a --device or --precision this machine cannot run",
    ExitCode.INPUT: "unusable input: a photo, CSV, folder, dataset, archive or download that is missing, unreadable "
    "or holds something it should not (bad labels, one class of pairs only, no identities)",
    ExitCode.NO_FACE: "no face found in a photo",
    ExitCode.OUTPUT: "the output cannot be written: a full disk, no permission, or an OUT_DIR holding another run's "
    "results or being written by another run",
    ExitCode.MODEL: "a model cannot be loaded: a checkpoint (--ckpt, --resume) or weight file that is missing, "
    "damaged, unsafe, not resumable or trained with other settings, or pretrained weights not on this machine",
    ExitCode.PARTIAL: "finished, but some items failed: pairs of a batch, photos of a folder or of `age` (see their "
    "rows)",
    ExitCode.OUT_OF_MEMORY: "the device ran out of memory (the message names the batch size to lower)",
    ExitCode.CHECK_FAILED: "evaluate.py leakage: people found in both the train and the val set",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C): what was done is kept, and the same command resumes",
    ExitCode.TERMINATED: "stopped by SIGTERM (a scheduler's stop): kept and resumed as for 130",
}


def exit_code_table() -> str:
    """docs/exit-codes.md's table of exit codes, one row per ExitCode."""
    rows = ["| code | name | meaning |", "| --- | --- | --- |"]
    rows += [f"| {code.value} | `{code.name}` | {code.meaning} |" for code in ExitCode]
    return "\n".join(rows)
