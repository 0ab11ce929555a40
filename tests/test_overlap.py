"""analyze_many with overlap (the next chunk read and detected in a background thread): the same analyses in
the same order as sequential runs, failures kept per photo, and no thread left once the generator is closed."""

from __future__ import annotations

import contextlib
import threading

import numpy as np
import pytest

from face_match_age.detection.faces import NoFaceError
from face_match_age.detection.imaging import ImageLoadError
from face_match_age.inference.analyzer import FaceAnalyzer
from face_match_age.inference.prefetch import prefetched


@pytest.fixture
def analyzer(torch_home_with_vggface2, age_checkpoint) -> FaceAnalyzer:
    return FaceAnalyzer(age_checkpoint=age_checkpoint)


@pytest.fixture
def photos(photo_dir, tmp_path) -> list:
    """Five chunks of two: faces, a missing file and a photo without a face in the middle, two people."""
    names = ["astronaut.jpg", "astronaut_edit.jpg", "two_people.jpg", "coffee.jpg", "astronaut.jpg"]
    before, after = [photo_dir / name for name in names[:3]], [photo_dir / name for name in names[3:]]
    return (
        before + [tmp_path / "missing.jpg"] + after + [photo_dir / "astronaut_edit.jpg", photo_dir / "two_people.jpg"]
    )


def _prefetch_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "prefetch"]


def _as_data(analysis) -> dict:
    """Everything an analysis reports, embeddings as raw bytes so that equality means bit-identical."""
    return {
        "source": analysis.source,
        "size": analysis.size,
        "chosen": analysis.chosen,
        "faces_found": analysis.faces_found,
        "failure": None if analysis.failure is None else (type(analysis.failure), str(analysis.failure)),
        "faces": [face.result(analysis.faces_found).to_json() for face in analysis.faces],
        "embeddings": [face.embedding.tobytes() for face in analysis.faces],
    }


@pytest.mark.parametrize("all_faces", [False, True])
def test_overlapped_analyses_equal_sequential_ones_in_the_same_order(analyzer, photos, all_faces):
    runs = {
        overlap: [_as_data(a) for a in analyzer.analyze_many(photos, all_faces, photos_per_chunk=2, overlap=overlap)]
        for overlap in (False, True)
    }
    assert runs[True] == runs[False]
    assert [row["source"] for row in runs[True]] == [str(photo) for photo in photos]


def test_overlapped_run_keeps_each_failure_on_its_photo(analyzer, photos):
    analyses = list(analyzer.analyze_many(photos, photos_per_chunk=2, overlap=True))
    failures = [None if analysis.failure is None else type(analysis.failure) for analysis in analyses]
    assert failures == [None, None, None, ImageLoadError, NoFaceError, None, None, None]
    assert all(analysis.face.embedding.shape == (512,) for analysis in analyses if analysis.failure is None)


def test_overlapped_embeddings_are_bit_identical_to_sequential_ones(analyzer, photos):
    found = [photo for photo in photos if photo.exists() and photo.name != "coffee.jpg"]
    sequential = np.stack([a.face.embedding for a in analyzer.analyze_many(found, photos_per_chunk=2)])
    overlapped = np.stack([a.face.embedding for a in analyzer.analyze_many(found, photos_per_chunk=2, overlap=True)])
    assert np.array_equal(overlapped, sequential)


def test_closing_an_overlapped_run_early_leaves_no_thread(analyzer, photos):
    assert _prefetch_threads() == []
    with contextlib.closing(analyzer.analyze_many(photos * 4, photos_per_chunk=1, overlap=True)) as analyses:
        first = next(analyses)
        assert len(_prefetch_threads()) == 1
    assert first.face is not None
    assert _prefetch_threads() == []


def test_ctrl_c_while_consuming_an_overlapped_run_leaves_no_thread(analyzer, photos):
    with pytest.raises(KeyboardInterrupt):
        with contextlib.closing(analyzer.analyze_many(photos * 4, photos_per_chunk=1, overlap=True)) as analyses:
            for _ in analyses:
                raise KeyboardInterrupt  # where the signal lands: in the main thread, which consumes
    assert _prefetch_threads() == []


def test_an_error_from_the_photos_iterable_reaches_the_consumer_after_the_earlier_photos(analyzer, photos):
    def photos_then_broken():
        yield from photos[:2]
        raise RuntimeError("the listing failed")

    seen = []
    with pytest.raises(RuntimeError, match="the listing failed"):
        for analysis in analyzer.analyze_many(photos_then_broken(), photos_per_chunk=1, overlap=True):
            seen.append(analysis.source)
    assert seen == [str(photo) for photo in photos[:2]]
    assert _prefetch_threads() == []


@pytest.mark.parametrize("depth", [1, 2])
def test_prefetch_never_runs_more_than_depth_items_ahead(depth):
    made = []

    def items():
        for number in range(20):
            made.append(number)
            yield number

    for consumed, item in enumerate(prefetched(items, depth=depth)):
        assert item == consumed
        # one item with the consumer, `depth` queued, one being made (and blocked on the full queue)
        assert len(made) <= consumed + depth + 2
    assert made == list(range(20))
