"""faces.detect_faces_batch on photos MTCNN cannot search: too small or too narrow once shrunk for detection."""

import numpy as np
import pytest
from PIL import Image

from config import Config
from face_match_age.detection.faces import (
    build_face_detector,
    detect_faces,
    detect_faces_batch,
    too_small_for_detection,
)

# (width, height): a thumbnail, one pixel short of a 20-pixel face, a banner, and a panorama that the shrink
# to detection_max_side=1600 makes 1600x10.
TINY_SIZES = [(1, 1), (19, 19), (4000, 40), (8000, 50)]


@pytest.fixture(scope="module")
def detector():
    return build_face_detector(Config())


def test_photos_too_small_for_mtcnn_have_no_face_and_leave_the_others_alone(detector, astronaut):
    config = Config()
    alone = detect_faces(detector, astronaut, config)
    assert len(alone) == 1
    tiny = [astronaut.resize(size) for size in TINY_SIZES]
    # the same-size pair of 19x19 photos and the full-size astronauts share MTCNN calls with each other only
    found = detect_faces_batch(detector, [tiny[0], astronaut, *tiny[1:], tiny[1], astronaut.copy()], config)
    assert [len(faces) for faces in found] == [0, 1, 0, 0, 0, 0, 1]
    for faces in (found[1], found[-1]):
        np.testing.assert_allclose(faces.boxes, alone.boxes, atol=1e-3)
    assert all(faces.crops.shape == (0, 3, config.img_size, config.img_size) for faces in found if len(faces) == 0)


@pytest.mark.parametrize("min_face_size", [12, 20, 40])
def test_the_too_small_rule_is_exactly_where_mtcnn_stops_building_its_pyramid(detector, min_face_size):
    config = Config(mtcnn_min_face_size=min_face_size)
    assert too_small_for_detection((min_face_size - 1, 500), config)
    assert not too_small_for_detection((min_face_size, 500), config)
    assert too_small_for_detection((1600 * 40, 40 * (min_face_size - 1)), config)  # shrunk 40 times
    assert not too_small_for_detection((1600 * 40, 40 * min_face_size), config)
    # one pixel above the rule MTCNN itself answers (and does not crash); one below it would raise in torch.cat
    detector = build_face_detector(config)
    noise = np.random.default_rng(0).integers(0, 256, (min_face_size, 3 * min_face_size, 3), dtype=np.uint8)
    detector.detect(Image.fromarray(noise))
    with pytest.raises(Exception, match=r"torch.cat"):  # a facenet-pytorch that stops crashing makes this fail
        detector.detect(Image.fromarray(noise[1:]))


def test_a_large_minimum_face_answers_no_face_instead_of_crashing(astronaut):
    config = Config(mtcnn_min_face_size=800)  # the largest allowed, and larger than this 512-pixel photo
    assert len(detect_faces(build_face_detector(config), astronaut, config)) == 0
