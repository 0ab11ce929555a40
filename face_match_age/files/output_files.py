"""Writing results safely: an output folder checked up front, atomic files, and names that never
silently overwrite the results of other photos."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from PIL import Image


class OutputError(OSError):
    """An output folder or file that cannot be written; `target`: the file, where write_atomically knows it."""

    target: Path | None = None


# A full disk, or a full quota on a shared one: the same advice.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_disk_full(error: BaseException) -> bool:
    """Whether `error` is a write that found the disk or the quota full (write_atomically's OutputError too)."""
    return isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS


def disk_full_message(path: Path | str | None, elsewhere: str = "another output folder") -> str:
    """One line for a write that found the disk (or the quota) full: which file, and what to do."""
    return f"disk full writing {path}; free space or choose {elsewhere}"


def prepare_out_dir(path: Path) -> Path:
    """Create `path` if needed and prove it writable, before any slow work starts."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write_test_"):
            pass
    except OSError as error:
        raise _unwritable(path, error) from None
    return path


def _unwritable(folder: Path, error: OSError) -> OutputError:
    return OutputError(
        f"cannot write to output folder {folder} ({error.strerror or error}); "
        "choose another OUT_DIR or fix its permissions"
    )


LOCK_FILE = ".lock"  # in an OUT_DIR that a batch or folder run is writing; empty, and left in place


@contextlib.contextmanager
def out_dir_lock(out_dir: Path) -> Iterator[Path]:
    """Hold OUT_DIR's lock for the `with` block, or raise OutputError at once when another run holds it: two
    runs appending to and replacing the same results files would each lose the other's rows.

    An OS lock (flock) on OUT_DIR/.lock, not a file that says "taken": the OS releases it when the process
    ends however it ends (kill -9 included), so a killed run never leaves OUT_DIR locked. The file itself
    stays: removing it would let a waiting run lock a file the next run no longer sees."""
    path = Path(out_dir) / LOCK_FILE
    try:
        handle = open(path, "a+b")  # noqa: SIM115 -- kept open for the block: closing it releases the lock
    except OSError as error:
        raise _unwritable(out_dir, error) from None
    with handle:
        if not _lock_at_once(handle):
            raise OutputError(
                f"another run is writing to {out_dir} (it holds {path}); wait for it to end, or choose another OUT_DIR"
            )
        yield path


def _lock_at_once(handle) -> bool:
    """Lock the open file `handle` for this process without waiting; False when another process holds it."""
    if sys.platform == "win32":  # no flock on Windows: a byte-range lock, released the same way
        import msvcrt

        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


TEMPORARY_SUFFIX = ".tmp"  # write_atomically's temporary files: ".NAME.tmp" beside NAME


def write_atomically(path: Path, write: Callable[[Path], object], *, durable: bool = False) -> Path:
    """Call write(temporary path) and move the result onto `path`: readers never see half a file, and a write
    that fails midway (full disk, Ctrl-C, an error in `write`) leaves the previous file whole and no temporary
    file behind. The temporary file sits in the same folder, so the move is a rename, never a copy.
    `durable`: flush the data to disk before the rename (for files worth the cost, such as checkpoints)."""
    tmp = path.with_name(f".{path.name}{TEMPORARY_SUFFIX}")
    try:
        write(tmp)
        if durable:
            _flush_to_disk(tmp)
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        failed = OutputError(f"cannot write {path} ({error.strerror or error})")
        # Kept so that a caller can tell a full disk (is_disk_full) and name the file in its own advice.
        failed.errno, failed.target = error.errno, path
        raise failed from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def remove_temporary_files(folder: Path) -> None:
    """Delete what write_atomically left in `folder` from writers that were killed outright (a worker process
    ended by its pool cannot run the clean-up above); a temporary file is never a result."""
    for leftover in Path(folder).glob(f".*{TEMPORARY_SUFFIX}"):
        leftover.unlink(missing_ok=True)


def _flush_to_disk(path: Path) -> None:
    # Without it the rename may reach the disk before the data it points to: a power cut leaves an empty file.
    with open(path, "rb+") as file:
        os.fsync(file.fileno())


def recorded_differences(path: Path, expected: dict) -> list[str] | None:
    """How the JSON object recorded in `path` differs from `expected`: the sorted keys whose values differ
    ([] when it is the same), or None when there is no readable JSON object to compare."""
    try:
        recorded = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(recorded, dict):
        return None
    return sorted(key for key in expected.keys() | recorded.keys() if expected.get(key) != recorded.get(key))


def write_json(path: Path, data: dict) -> Path:
    return write_atomically(
        path, lambda tmp: tmp.write_text(json.dumps(data, indent=4, ensure_ascii=False) + "\n", encoding="utf-8")
    )


def unique_stem(out_dir: Path, stem: str, sources: list[str]) -> str:
    """`stem`, or `stem_2`, `stem_3`... when `stem_result.jpg` already holds the result of other photos
    (same file names from other folders). The sources are recorded in each result image's JPEG comment."""
    candidate, number = stem, 2
    while (out_dir / f"{candidate}_result.jpg").exists() and _sources_of(
        out_dir / f"{candidate}_result.jpg"
    ) != sources:
        candidate, number = f"{stem}_{number}", number + 1
    if candidate != stem:
        print(
            f"note: {out_dir / (stem + '_result.jpg')} holds another pair's result; writing {candidate}_* instead",
            file=sys.stderr,
        )
    return candidate


def _sources_of(result_image: Path) -> list[str] | None:
    try:
        with Image.open(result_image) as image:
            return json.loads(image.info.get("comment", b"null"))
    except (OSError, ValueError):
        return None
