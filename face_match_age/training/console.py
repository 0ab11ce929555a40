"""A quiet training console: Lightning's advertising tips and its hardware lines (train.py prints its own
"Training on ..." line) are dropped; its warnings and everything else are kept."""

from __future__ import annotations

import logging

# Lightning's rank_zero_info lines that say nothing about this run: tips for its cloud products, and which
# accelerators exist (train.py's "Training on cpu, precision 32 (...)" says what is used and why).
DROPPED_PREFIXES = ("💡 Tip:", "GPU available:", "TPU available:", "HPU available:", "IPU available:")
LIGHTNING_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(DROPPED_PREFIXES)


def quiet_lightning() -> None:
    """Drop DROPPED_PREFIXES' lines from Lightning's console (once per process, however often called)."""
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, _DropNoise) for existing in logger.filters):
            logger.addFilter(_DropNoise())
