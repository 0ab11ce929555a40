"""One downloader for weights and datasets: streamed, resumable, retried, atomic.

The file grows as `<dest>.part` and is renamed to `dest` only when complete, so a crash or a dropped
connection never leaves something that looks finished; the next call resumes the `.part` with an
HTTP Range request.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import requests
import urllib3
from tqdm import tqdm

CHUNK_BYTES = 1 << 16  # 64 KiB: fast enough, and a broken connection loses at most this much
CONNECT_TIMEOUT_S = 10  # no answer within this is a dead mirror, not a slow one
READ_TIMEOUT_S = 60
RETRIES = 3  # transient network errors are common on multi-GB archives
BACKOFF_S = 2.0  # first wait between attempts; doubles each time
FREE_SPACE_MARGIN = 256 << 20  # leave room for logs and the system; a full disk breaks more than the download


class DownloadError(RuntimeError):
    """A download that failed after all retries; the partial file is kept for the next attempt.
    `reason`: why, without the URL, for messages that name the URL themselves."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message


class NotEnoughSpace(DownloadError):
    """The disk cannot hold what is left to download; retrying would not help."""


def download(url: str, dest: Path, *, retries: int | None = None, quiet: bool = False) -> Path:
    """Download `url` to `dest` (kept as is if it already exists) and return `dest`."""
    retries = RETRIES if retries is None else retries
    dest = Path(dest)
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    last_error: Exception | None = None
    for attempt in range(retries + 1):
        if attempt:
            wait_s = BACKOFF_S * 2 ** (attempt - 1)
            print(
                f"download of {url} failed ({failure_reason(last_error)}); "
                f"attempt {attempt + 1} of {retries + 1} in {wait_s:.0f}s",
                file=sys.stderr,
            )
            time.sleep(wait_s)
        try:
            _fetch_into(url, part, quiet)
            part.replace(dest)
            return dest
        except (requests.RequestException, OSError) as error:
            last_error = error
            if _is_permanent(error):
                break
    attempts = "1 attempt" if attempt == 0 else f"{attempt + 1} attempts"
    reason = f"{failure_reason(last_error)} (after {attempts})"
    raise DownloadError(f"could not download {url} after {attempts}: {failure_reason(last_error)}", reason)


def _fetch_into(url: str, part: Path, quiet: bool) -> None:
    done = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={done}-"} if done else {}
    with requests.get(url, headers=headers, stream=True, timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S)) as response:
        if response.status_code == 416:  # the .part already holds every byte
            return
        response.raise_for_status()
        if done and response.status_code != 206:  # server ignored Range: start over
            done = 0
        length = response.headers.get("Content-Length")
        total = done + int(length) if length is not None else None
        if length is not None:
            _check_free_space(part.parent, int(length))
        with (
            open(part, "ab" if done else "wb") as out,
            tqdm(
                total=total,
                initial=done,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=part.name.removesuffix(".part"),
                disable=quiet,
            ) as bar,
        ):
            for chunk in response.iter_content(CHUNK_BYTES):
                out.write(chunk)
                bar.update(len(chunk))
    if total is not None and part.stat().st_size != total:
        raise OSError(f"connection closed after {part.stat().st_size} of {total} bytes")


def _check_free_space(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed + FREE_SPACE_MARGIN:
        raise NotEnoughSpace(
            f"{folder} has {free / 1e9:.1f} GB free but the download needs {needed / 1e9:.1f} GB "
            "more; free some space or download elsewhere and pass --archive"
        )


def _is_permanent(error: Exception) -> bool:
    """Failures that waiting will not cure: no such host, nothing listening, no route, 4xx answers.
    Timeouts, dropped connections and 5xx answers are worth another attempt."""
    if isinstance(error, requests.HTTPError) and error.response is not None:
        return 400 <= error.response.status_code < 500
    reason = getattr(error.args[0], "reason", None) if error.args else None
    return isinstance(error, requests.ConnectionError) and isinstance(reason, urllib3.exceptions.NewConnectionError)


def failure_reason(error: Exception | None) -> str:
    """The innermost reason of a failed request, whole: requests wraps it in a retry error whose text
    repeats the URL and runs past any line ("Max retries exceeded with url: ... (Caused by ...)")."""
    if error is None:
        return "unknown error"
    wrapped = error.args[0] if isinstance(error, requests.ConnectionError) and error.args else None
    inner = getattr(wrapped, "reason", None)
    return str(inner if isinstance(inner, Exception) else error)
