"""infer.py's or data_prep.py's main, held still at an exact point so that a test can signal or kill it there.

    python tests/stop_probe.py READY_FILE MODE [the script's options...]

MODE batch: infer.py --pairs with --devices N; every worker holds after its first photo, and READY_FILE (the
workers' pids, one a line) is written once the main process has every worker's first photo, and so the row of
a pair whose photos went to the first two workers.
MODE folder: infer.py --folder in one process, held after its first FOLDER_PHOTOS photos, before any chunk is
saved. MODE prep: data_prep.py, held once PREP_CROPS crops are logged.
The main process holds until a signal ends its wait; a worker holds until its parent ends it. Waiting on a file
and a signal, not on time, keeps the tests exact on a loaded machine.
"""

import contextlib
import functools
import multiprocessing
import sys
import time
from pathlib import Path

MAX_WAIT_S = 300  # only so that a forgotten process ends by itself
FOLDER_PHOTOS = 2
PREP_CROPS = 2


def hold() -> None:
    """Wait, in small sleeps that a signal handler can end by raising."""
    deadline = time.monotonic() + MAX_WAIT_S
    while time.monotonic() < deadline:
        time.sleep(0.05)


def ready(ready_file: Path) -> None:
    pids = [str(child.pid) for child in multiprocessing.active_children()]
    partial = ready_file.with_suffix(".partial")  # renamed into place: the test never reads half a list
    partial.write_text("".join(pid + "\n" for pid in pids))
    partial.replace(ready_file)


class HeldAfterFirstPhoto:
    """A worker's analyzer that stays busy after its first photo, until the main process stops the worker."""

    def __init__(self, analyzer) -> None:
        self.analyzer = analyzer

    def analyze_many(self, *args, **kwargs):
        for analysis in self.analyzer.analyze_many(*args, **kwargs):
            yield analysis
            hold()


def held_analyzer(make_analyzer, **kwargs) -> HeldAfterFirstPhoto:
    return HeldAfterFirstPhoto(make_analyzer(**kwargs))


def hold_batch(ready_file: Path) -> None:
    from face_match_age.inference import batch

    sharded = batch.analyses_sharded

    def held(world, device, all_faces, make_analyzer, photos):
        held_make = functools.partial(held_analyzer, make_analyzer)
        with contextlib.closing(sharded(world, device, all_faces, held_make, photos)) as analyses:
            for count, analysis in enumerate(analyses, start=1):
                yield analysis  # the caller writes the rows this photo completes before it asks for the next
                if count == world:
                    ready(ready_file)
                    hold()

    batch.analyses_sharded = held


def hold_folder(ready_file: Path) -> None:
    from face_match_age.inference.analyzer import FaceAnalyzer

    analyze_many = FaceAnalyzer.analyze_many

    def held(self, *args, **kwargs):
        for count, analysis in enumerate(analyze_many(self, *args, **kwargs), start=1):
            yield analysis
            if count == FOLDER_PHOTOS:
                ready(ready_file)
                hold()

    FaceAnalyzer.analyze_many = held


def hold_prep(ready_file: Path) -> None:
    from face_match_age.preparation.crops import CropLog

    record = CropLog.record

    def held(self, handle, task, outcome) -> None:
        record(self, handle, task, outcome)
        if len(self.entries) == PREP_CROPS:
            ready(ready_file)
            hold()

    CropLog.record = held


if __name__ == "__main__":
    ready_file, mode, *options = sys.argv[1:]
    {"batch": hold_batch, "folder": hold_folder, "prep": hold_prep}[mode](Path(ready_file))
    if mode == "prep":
        import data_prep

        sys.exit(data_prep.main(options))
    import infer

    sys.exit(infer.main(options))
