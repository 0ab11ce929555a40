"""Safe unpacking of dataset archives (.tar, .tar.gz, .zip) and their integrity checks.

Archives are untrusted input: members with absolute paths, `..`, links leading outside the target,
device files and the like are refused with a message naming the member, before anything is written
for it (tarfile's `data` filter; the same rules checked by hand for zip files).
"""

from __future__ import annotations

import hashlib
import json
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from tqdm import tqdm

DONE_MARKER = ".unpacked"  # written last: its presence means the folder holds the whole archive
HASH_CHUNK = 1 << 22


class ArchiveError(ValueError):
    """An archive that is unsafe, corrupt or not what was expected."""


def unpack(archive: Path, target: Path) -> Path:
    """Unpack `archive` into `target` once; a later call finds the marker and returns at once."""
    marker = target / DONE_MARKER
    if marker.exists() and json.loads(marker.read_text()).get("archive_size") == archive.stat().st_size:
        return target
    target.mkdir(parents=True, exist_ok=True)
    try:
        if zipfile.is_zipfile(archive):
            _unpack_zip(archive, target)
        elif tarfile.is_tarfile(archive):
            _unpack_tar(archive, target)
        else:
            raise ArchiveError(f"{archive} is neither a tar nor a zip archive")
    except OSError as error:
        raise ArchiveError(
            f"unpacking {archive} into {target} failed ({error.strerror or error}); "
            "check the free disk space and the archive, then run again"
        ) from None
    marker.write_text(json.dumps({"archive": archive.name, "archive_size": archive.stat().st_size}))
    return target


def _unpack_tar(archive: Path, target: Path) -> None:
    with tarfile.open(archive) as tar:
        for member in tqdm(tar, desc=f"unpacking {archive.name}", unit="file"):  # streamed: one pass over .gz
            if _is_absolute(member.name):
                # tarfile's filter would quietly strip the slash; an archive that asks for this is refused.
                raise ArchiveError(f"refused to unpack {archive}: member {member.name!r} is unsafe (absolute path)")
            try:
                tar.extract(member, target, filter="data")
            except tarfile.FilterError as error:
                raise ArchiveError(
                    f"refused to unpack {archive}: member {member.name!r} is unsafe ({type(error).__name__}: {error})"
                ) from None
            except (tarfile.ReadError, EOFError, zlib.error) as error:
                raise ArchiveError(
                    f"{archive} is corrupt or truncated near {member.name!r} ({error}); delete it and download it again"
                ) from None


def _unpack_zip(archive: Path, target: Path) -> None:
    root = target.resolve()
    with zipfile.ZipFile(archive) as bundle:
        for info in tqdm(bundle.infolist(), desc=f"unpacking {archive.name}", unit="file"):
            _check_zip_member(archive, info, root)
            try:
                bundle.extract(info, target)
            except (zipfile.BadZipFile, EOFError) as error:
                raise ArchiveError(
                    f"{archive} is corrupt near {info.filename!r} ({error}); delete it and download it again"
                ) from None


def _check_zip_member(archive: Path, info: zipfile.ZipInfo, root: Path) -> None:
    name = info.filename
    parts = PurePosixPath(name.replace("\\", "/")).parts
    mode = info.external_attr >> 16
    problem = None
    if _is_absolute(name):
        problem = "absolute path"
    elif ".." in parts:
        problem = "path leaving the target folder"
    elif mode and (mode & 0o170000) not in (0, 0o100000, 0o040000):
        problem = "link or special file"
    elif not (root / name).resolve().is_relative_to(root):
        problem = "path leaving the target folder"
    if problem:
        raise ArchiveError(f"refused to unpack {archive}: member {name!r} is unsafe ({problem})")


def _is_absolute(name: str) -> bool:
    return name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":")


def md5_of(path: Path) -> str:
    """MD5 of a file, with a progress bar (multi-GB archives take a while)."""
    digest = hashlib.md5(usedforsecurity=False)  # the archives' published checksums, not a security check
    with (
        open(path, "rb") as handle,
        tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc=f"checking {path.name}") as bar,
    ):
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def verify_checksum(path: Path, expected: str | None) -> bool:
    """True when `expected` is unknown or matches; the result is remembered beside the file (by size
    and modification time) so a second run does not hash gigabytes again."""
    if expected is None:
        return True
    stamp = path.with_name(path.name + ".md5ok")
    signature = f"{expected} {path.stat().st_size} {path.stat().st_mtime_ns}"
    if stamp.exists() and stamp.read_text() == signature:
        return True
    if md5_of(path) != expected:
        return False
    stamp.write_text(signature)
    return True
