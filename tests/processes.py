"""Every wait of a test on a child process has a deadline: a child that hangs fails its test with a message
saying what the test waited for, instead of hanging the run. The deadline sits under pytest-timeout's limit
per test (pyproject.toml), so this message, not the bare time-out, is what a hang shows."""

from __future__ import annotations

import select
import shlex
import subprocess
import time
from collections.abc import Callable, Sequence

import pytest

DEADLINE_S = 600  # generous for a loaded 2-core machine: reached only when something hangs


def _give_up(waiting_for: str, deadline_s: float, command: Sequence, output: str = "") -> None:
    tail = f"\n{output[-3000:]}" if output else ""
    pytest.fail(f"gave up after {deadline_s:.0f} s waiting for {waiting_for} ({_shell(command)}){tail}")


def _shell(command: Sequence) -> str:
    return shlex.join(str(part) for part in command)


def _kill(process: subprocess.Popen) -> None:
    process.kill()
    process.wait()


def run(command: Sequence, waiting_for: str, deadline_s: float = DEADLINE_S, **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run with a deadline: past it the child is killed and the test fails naming `waiting_for`."""
    __tracebackhide__ = True  # a failure points at the test's line, not here
    try:
        return subprocess.run(command, timeout=deadline_s, **kwargs)  # noqa: PLW1510  callers pass check= in kwargs
    except subprocess.TimeoutExpired as expired:
        stderr = expired.stderr or b""  # bytes, whatever text= said
        output = stderr.decode(errors="replace") if isinstance(stderr, bytes) else stderr
    _give_up(waiting_for, deadline_s, command, output)  # outside the except: no chained traceback
    raise AssertionError("unreachable: pytest.fail raises")


def wait(process: subprocess.Popen, waiting_for: str, deadline_s: float = DEADLINE_S) -> int:
    """The exit code of `process`; past the deadline it is killed and the test fails naming `waiting_for`."""
    __tracebackhide__ = True  # a failure points at the test's line, not here
    try:
        return process.wait(deadline_s)
    except subprocess.TimeoutExpired:
        _kill(process)
    _give_up(waiting_for, deadline_s, process.args)
    raise AssertionError("unreachable: pytest.fail raises")


def wait_until(
    condition: Callable[[], bool],
    process: subprocess.Popen,
    waiting_for: str,
    deadline_s: float = DEADLINE_S,
    output: Callable[[], str] = str,
) -> None:
    """Poll `condition` until it holds. Should `process` end first, or the deadline pass (then it is killed), the
    test fails naming `waiting_for`, with the tail of `output()` (say, the child's stderr file)."""
    __tracebackhide__ = True  # a failure points at the test's line, not here
    deadline = time.monotonic() + deadline_s
    while not condition():
        if process.poll() is not None:
            pytest.fail(
                f"gave up waiting for {waiting_for}: {_shell(process.args)} ended first, with exit code "
                f"{process.returncode}\n{output()[-3000:]}"
            )
        if time.monotonic() > deadline:
            _kill(process)
            _give_up(waiting_for, deadline_s, process.args, output())
        time.sleep(0.05)


def read_line(process: subprocess.Popen, waiting_for: str, deadline_s: float = DEADLINE_S) -> bytes:
    """The next line of `process`'s stdout (a pipe); past the deadline it is killed and the test fails."""
    __tracebackhide__ = True  # a failure points at the test's line, not here
    ready, _, _ = select.select([process.stdout], [], [], deadline_s)
    if not ready:
        _kill(process)
        _give_up(waiting_for, deadline_s, process.args)
    return process.stdout.readline()
