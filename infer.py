"""Faces in photos: the age of every face and whether two photos show the same person (`uv run python infer.py
--help`): the commands compare, age, pairs and folder, and the seed's shortest forms IMG1 IMG2 OUT_DIR and
PHOTO OUT_DIR.

The command line lives in the package, face_match_age/cli.py, so that the installed `face-match-age` command is
the same program; this script runs it from a checkout of the repository.
"""

import sys

from face_match_age.cli import (
    EXIT_INPUT,
    EXIT_INTERRUPTED,
    EXIT_MODEL,
    EXIT_NO_FACE,
    EXIT_OK,
    EXIT_OUT_OF_MEMORY,
    EXIT_OUTPUT,
    EXIT_PAIRS_FAILED,
    EXIT_TERMINATED,
    EXIT_USAGE,
    build_parser,
    main,
)

__all__ = [
    "EXIT_INPUT",
    "EXIT_INTERRUPTED",
    "EXIT_MODEL",
    "EXIT_NO_FACE",
    "EXIT_OK",
    "EXIT_OUT_OF_MEMORY",
    "EXIT_OUTPUT",
    "EXIT_PAIRS_FAILED",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "build_parser",
    "main",
]

if __name__ == "__main__":
    sys.exit(main())
