"""Stops that reach every process: how helper processes start, and how a main process turns SIGTERM into the
clean path Ctrl-C takes.

A scheduler's stop (Slurm's scancel or a pre-emption, systemctl stop, `kill -TERM -- -PGID`) and Ctrl-C in a
terminal signal every process of the job at once. A helper process (a DataLoader worker, one of infer.py's
--devices processes, a crop worker of data_prep.py) that died of it first would make its parent fail with a
traceback before it saved anything. So every helper calls `start_helper_process` first: it ignores SIGINT and
SIGTERM, leaving the stop to its parent, which saves what it has and then ends its helpers with SIGKILL
(`helper_context`'s processes: terminate() kills, since SIGTERM no longer would). And a helper dies with its
parent: a parent killed with SIGKILL (or by the OOM killer) cannot end its helpers, and helpers holding a GB
of models each would run on orphaned.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.context import SpawnContext, SpawnProcess
from types import FrameType
from typing import Any

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>: the signal a process gets when its parent dies
PARENT_POLL_S = 1.0  # where prctl is missing: how often a helper checks that its parent is alive
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def start_helper_process() -> None:
    """The first thing every helper process does: leave stopping to the parent, and die with it."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    parent_pid = parent.pid if parent is not None else os.getppid()
    if not _die_with_parent():
        threading.Thread(target=_watch_parent, args=(parent_pid,), name="watch-parent", daemon=True).start()
    if os.getppid() != parent_pid:  # the parent died before prctl took effect: nobody is left to stop this one
        os._exit(1)


def _die_with_parent() -> bool:
    """Have Linux SIGKILL this process when its parent ends; False where that cannot be asked. Linux sends it
    when the parent's thread that started this process ends: every helper here is started by a main thread."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:  # once the parent is gone, this process is adopted by another
        time.sleep(PARENT_POLL_S)
    os._exit(1)


class HelperProcess(SpawnProcess):
    """A spawned helper process whose terminate() is a SIGKILL: helpers ignore SIGTERM (see the module)."""

    def terminate(self) -> None:
        self.kill()


class HelperContext(SpawnContext):
    """The spawn context (CUDA and MTCNN state do not survive a fork) with HelperProcess for its processes, so
    that terminate() (sharding.py's stop) and multiprocessing's clean-up at exit still end the helpers."""

    Process = HelperProcess


def helper_context() -> HelperContext:
    return HelperContext()


class StopSignals:
    """Within `with StopSignals() as stop:`, SIGTERM raises KeyboardInterrupt as Ctrl-C does, so that both take
    the same path that keeps what was done; afterwards `stop.exit_code` is what a shell reports for the signal
    that came first (130 for SIGINT, also when nothing came, 143 for SIGTERM) and `stop.what` says it in words.
    Only in the main thread, where Python runs signal handlers."""

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self._previous: dict[int, Callable[[int, FrameType | None], Any] | int | None] = {}  # as signal.signal returns

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                # A SIGINT someone ignored (nohup, a background job of a script) stays ignored.
                if signum != signal.SIGINT or signal.getsignal(signum) is signal.default_int_handler:
                    self._previous[signum] = signal.signal(signum, self._interrupt)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _interrupt(self, signum: int, frame) -> None:
        self.received = self.received or signal.Signals(signum)
        raise KeyboardInterrupt

    @property
    def exit_code(self) -> int:
        return 128 + (self.received or signal.SIGINT)

    @property
    def what(self) -> str:
        return "stopped by SIGTERM" if self.received == signal.SIGTERM else "interrupted"
