"""Work shared out over helper processes, the one way every script does it: infer.py --pairs and --folder with
--devices N (one process per GPU, or CPU processes) and data_prep.py's crop workers (--workers N).

Each of `world` spawned helpers (processes.helper_context: they leave Ctrl-C and SIGTERM to the main process,
which keeps what was done and then ends them) gets every world-th item, sets up its own models once, and sends
back what it makes as it goes; the main process takes the results in the order they come. A helper that dies
is noticed within WORKER_POLL_S, and named, rather than waited on for ever.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Generator, Iterable, Sequence

from face_match_age.processes import helper_context, start_helper_process

WORKER_POLL_S = 5.0  # how often the main process checks that no worker died silently
QUEUE_SIZE = 256  # results waiting for the main process: bounds the memory of workers that run ahead


def sharded(
    world: int,
    work: Callable[[int, int, list], Iterable],
    items: Sequence,
    passed_on: tuple[type[BaseException], ...],
    died: str,
) -> Generator:
    """What work(rank, world, items[rank::world]) yields, from `world` helper processes, in the order it
    comes. `work` must pickle (a module-level function, or a functools.partial of one). An exception of a
    `passed_on` type that `work` raises is raised here as itself; a worker that dies of anything else raises
    RuntimeError(died.format(exit_code=...)). Closing the iterator stops the workers (SIGKILL)."""
    context = helper_context()  # spawned (CUDA and MTCNN state do not survive a fork)
    results = context.Queue(maxsize=QUEUE_SIZE)
    workers = [
        context.Process(target=_worker, daemon=True, args=(rank, world, work, share, passed_on, results))
        for rank, share in enumerate(_shares(items, world))
    ]
    for worker in workers:
        worker.start()
    finished = 0
    try:
        while finished < len(workers):
            try:
                kind, payload = results.get(timeout=WORKER_POLL_S)
            except queue.Empty:
                _check_alive(workers, died)
                continue
            if kind == "result":
                yield payload
            elif kind == "done":
                finished += 1
            else:  # "error": the worker's own exception, so it ends the run as it would in one process
                raise payload
    finally:
        _stop(workers, finished == len(workers))


def _shares(items: Sequence, world: int) -> list[list]:
    """Every world-th item for each worker: a batch's photos come in the pairs' order, so the first pair's two
    photos go to two workers, and their first results already complete a row."""
    return [list(items[rank::world]) for rank in range(world)]


def _check_alive(workers, died: str) -> None:
    dead = [w for w in workers if w.exitcode not in (None, 0)]
    if dead:
        raise RuntimeError(died.format(exit_code=dead[0].exitcode))


def _stop(workers, all_finished: bool) -> None:
    """Let finished workers exit; kill the others (terminate() is a SIGKILL: helpers ignore SIGTERM) and wait
    for them, so that none still writes a file once the caller cleans up."""
    for worker in workers:
        if not all_finished:
            worker.terminate()
    for worker in workers:
        worker.join(timeout=1 if all_finished else WORKER_POLL_S)


def _worker(rank: int, world: int, work, share: list, passed_on: tuple, results) -> None:
    start_helper_process()  # Ctrl-C and SIGTERM are the main process's to handle: it keeps the results, then stops us
    try:
        for result in work(rank, world, share):
            results.put(("result", result))
    except passed_on as error:
        # Sent whole: it pickles (one message argument), so the parent raises the same type with the same text.
        results.put(("error", error))
        return
    results.put(("done", rank))
