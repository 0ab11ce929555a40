"""Micro-batching: one worker thread owns the FaceAnalyzer, and photos of requests that arrive together go
through MTCNN and the two networks as one batch.

A request hands its decoded photos to `MicroBatcher.submit` and waits on the Future it gets back. The worker
takes the first waiting request, then every request already queued, then waits at most `max_wait_s` for more,
until `max_photos` photos are gathered (a request is never split: one with more photos than that goes alone).
The batch runs as one `FaceAnalyzer.analyze_many` call (one chunk: one detection call over all its photos, one
forward pass per `inference_batch_size` faces), once for the requests that want the chosen face of each photo
and once for those that want every face. A lone request waits at most `max_wait_s` more than it would alone;
requests that queue while a batch runs are taken together with no wait at all.

Each photo's analysis is the one `analyze_many` gives it in any batch: detection answers each photo as it would
alone (detection.batched_mtcnn), and each face's network outputs depend on that face only.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

    from face_match_age.inference.analyzer import FaceAnalyzer, PhotoAnalysis

DEFAULT_MAX_WAIT_S = 0.005
DEFAULT_MAX_PHOTOS = 32


@dataclass
class _Job:
    photos: list[Image.Image]
    names: list[str]
    all_faces: bool
    future: Future = field(default_factory=Future)


@dataclass
class BatchStats:
    """What the worker has done, for /health and the tests: batches run, requests and photos in them."""

    batches: int = 0
    requests: int = 0
    photos: int = 0
    largest_batch_requests: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


class MicroBatcher:
    """The one thread that runs `analyzer`; `submit` from any thread (or `analyze` to wait for the answer)."""

    def __init__(
        self, analyzer: FaceAnalyzer, max_wait_s: float = DEFAULT_MAX_WAIT_S, max_photos: int = DEFAULT_MAX_PHOTOS
    ) -> None:
        if max_wait_s < 0 or max_photos < 1:
            raise ValueError(f"max_wait_s must be >= 0 and max_photos >= 1, not {max_wait_s} and {max_photos}")
        self.analyzer = analyzer
        self.max_wait_s = max_wait_s
        self.max_photos = max_photos
        self.stats = BatchStats()
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._closed = False
        self._carried: _Job | None = None  # a request that would have made the last batch too large: next batch's first
        self._thread = threading.Thread(target=self._run, name="face-match-age-models", daemon=True)
        self._thread.start()

    def submit(self, photos: list[Image.Image], names: list[str], all_faces: bool = False) -> Future:
        """A Future of the photos' PhotoAnalysis list, in order (a failed photo has its `failure` set, as
        analyze_many gives it); an error of the networks themselves (out of memory) is the Future's exception."""
        if self._closed:
            raise RuntimeError("the service is shutting down")
        job = _Job(list(photos), list(names), all_faces)
        self._queue.put(job)
        return job.future

    def analyze(self, photos: list[Image.Image], names: list[str], all_faces: bool = False) -> list[PhotoAnalysis]:
        return self.submit(photos, names, all_faces).result()

    def close(self, timeout: float | None = 10.0) -> None:
        """Stop taking requests, finish the queued ones, end the thread."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            first, self._carried = self._carried or self._queue.get(), None
            if first is None:
                return
            jobs, stop = self._gather(first)
            self._process(jobs)
            if stop:
                return

    def _gather(self, first: _Job) -> tuple[list[_Job], bool]:
        """`first` and the requests that join it: those queued now, then those arriving within max_wait_s."""
        jobs, photos = [first], len(first.photos)
        deadline = time.monotonic() + self.max_wait_s
        while photos < self.max_photos:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    job = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            if job is None:
                return jobs, True
            if photos + len(job.photos) > self.max_photos:
                self._carried = job  # first of the next batch, ahead of those that came after it
                break
            jobs.append(job)
            photos += len(job.photos)
        return jobs, False

    def _process(self, jobs: list[_Job]) -> None:
        self.stats.batches += 1
        self.stats.requests += len(jobs)
        self.stats.photos += sum(len(job.photos) for job in jobs)
        self.stats.largest_batch_requests = max(self.stats.largest_batch_requests, len(jobs))
        for all_faces in (False, True):
            group = [job for job in jobs if job.all_faces == all_faces and job.future.set_running_or_notify_cancel()]
            if group:
                self._analyze_group(group, all_faces)

    def _analyze_group(self, group: list[_Job], all_faces: bool) -> None:
        photos = [photo for job in group for photo in job.photos]
        names = [name for job in group for name in job.names]
        try:
            analyses = list(
                self.analyzer.analyze_many(photos, all_faces=all_faces, photos_per_chunk=len(photos), names=names)
            )
        except BaseException as error:  # out of memory, a bug: each request answers it; the thread goes on
            for job in group:
                job.future.set_exception(error)
            if not isinstance(error, Exception):
                raise
            return
        start = 0
        for job in group:
            job.future.set_result(analyses[start : start + len(job.photos)])
            start += len(job.photos)
