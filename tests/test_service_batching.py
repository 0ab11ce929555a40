"""The service's micro-batching on a stand-in analyzer (no models): requests arriving together go through one
analyze_many call, a batch holds at most max_photos photos and never splits a request, each request gets its own
photos' analyses in order, and a failure of the networks answers the requests of that batch only."""

import threading
import time

import pytest

from face_match_age.service.batching import MicroBatcher


class RecordingAnalyzer:
    """analyze_many's signature; each photo (an int here) analyses to (photo, all_faces). Calls are recorded,
    and each waits on `gate` so that a test can let requests queue behind a running batch."""

    def __init__(self) -> None:
        self.calls: list[tuple[list, bool, list]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()  # set when a call starts, before it waits at the gate
        self.fail_next = False

    def analyze_many(self, photos, all_faces=False, compute=True, photos_per_chunk=16, names=None, overlap=False):
        self.entered.set()
        self.gate.wait(120)
        photos, names = list(photos), list(names)
        assert photos_per_chunk >= len(photos)  # one chunk: one detection call, shared forward passes
        self.calls.append((photos, all_faces, names))
        if self.fail_next:
            self.fail_next = False
            raise MemoryError("the device ran out of memory")
        return iter([(photo, all_faces) for photo in photos])


@pytest.fixture
def analyzer():
    return RecordingAnalyzer()


def _submit_while_blocked(batcher, analyzer, requests):
    """Hold the worker inside a first batch, queue `requests`, then let it go; the futures of the requests."""
    analyzer.gate.clear()
    analyzer.entered.clear()
    first = batcher.submit([0], ["first"])
    assert analyzer.entered.wait(120)  # the worker runs the first request's batch, held at the gate
    futures = [batcher.submit(photos, [f"p{p}" for p in photos], all_faces) for photos, all_faces in requests]
    analyzer.gate.set()
    assert first.result(10) == [(0, False)]
    return futures


def test_requests_queued_together_share_one_call(analyzer):
    batcher = MicroBatcher(analyzer, max_wait_s=0.0, max_photos=32)
    futures = _submit_while_blocked(batcher, analyzer, [([1, 2], False), ([3], False), ([4, 5], False)])
    assert [future.result(10) for future in futures] == [
        [(1, False), (2, False)],
        [(3, False)],
        [(4, False), (5, False)],
    ]
    assert [call[0] for call in analyzer.calls] == [[0], [1, 2, 3, 4, 5]]
    assert analyzer.calls[1][2] == ["p1", "p2", "p3", "p4", "p5"]  # each photo keeps its label
    assert batcher.stats.to_dict() == {"batches": 2, "requests": 4, "photos": 6, "largest_batch_requests": 3}
    batcher.close()


def test_every_face_and_the_chosen_face_are_separate_calls_of_one_batch(analyzer):
    batcher = MicroBatcher(analyzer, max_wait_s=0.0)
    futures = _submit_while_blocked(batcher, analyzer, [([1], True), ([2, 3], False), ([4], True)])
    assert [future.result(10) for future in futures] == [[(1, True)], [(2, False), (3, False)], [(4, True)]]
    assert [(call[0], call[1]) for call in analyzer.calls[1:]] == [([2, 3], False), ([1, 4], True)]
    assert batcher.stats.batches == 2
    batcher.close()


def test_a_batch_holds_at_most_max_photos_and_never_splits_a_request(analyzer):
    batcher = MicroBatcher(analyzer, max_wait_s=0.0, max_photos=4)
    futures = _submit_while_blocked(
        batcher, analyzer, [([1, 2], False), ([3, 4, 5], False), ([6], False), ([7] * 6, False)]
    )
    results = [future.result(10) for future in futures]
    assert results[3] == [(7, False)] * 6  # larger than a batch: it goes alone
    assert [call[0] for call in analyzer.calls[1:]] == [[1, 2], [3, 4, 5, 6], [7] * 6]  # in arrival order
    batcher.close()


def test_a_lone_request_waits_at_most_max_wait_and_a_late_one_joins_within_it(analyzer):
    batcher = MicroBatcher(analyzer, max_wait_s=0.05)
    started = time.perf_counter()
    assert batcher.analyze([1], ["one"]) == [(1, False)]
    assert time.perf_counter() - started < 2
    batcher.close()
    batcher = MicroBatcher(analyzer, max_wait_s=5.0, max_photos=2)  # a batch of 2 photos goes at once
    first = batcher.submit([2], ["two"])
    late = batcher.submit([3], ["three"])
    assert first.result(10) == [(2, False)] and late.result(10) == [(3, False)]
    assert analyzer.calls[-1][0] == [2, 3]
    batcher.close()


def test_a_failed_batch_answers_its_requests_with_the_error_and_the_worker_goes_on(analyzer):
    batcher = MicroBatcher(analyzer, max_wait_s=0.0)
    analyzer.fail_next = True
    with pytest.raises(MemoryError):
        batcher.analyze([1], ["one"])
    assert batcher.analyze([2], ["two"]) == [(2, False)]
    batcher.close()


def test_close_finishes_the_queued_requests_then_refuses_new_ones(analyzer):
    batcher = MicroBatcher(analyzer, max_wait_s=0.0)
    futures = _submit_while_blocked(batcher, analyzer, [([1], False)])
    batcher.close()
    assert futures[0].result(10) == [(1, False)]
    with pytest.raises(RuntimeError, match="shutting down"):
        batcher.submit([2], ["two"])


def test_bad_settings_are_refused(analyzer):
    with pytest.raises(ValueError, match="max_photos"):
        MicroBatcher(analyzer, max_photos=0)
