"""Photos of different sizes detected together (size buckets, batched_mtcnn) get the answer facenet-pytorch's
MTCNN.detect gives each of them alone, in input order, in a few network calls."""

import numpy as np
import pytest
from facenet_pytorch import MTCNN
from PIL import Image

from config import FACE_SELECTION_CHOICES, Config
from face_match_age.detection.batched_mtcnn import pyramid_scales, size_buckets
from face_match_age.detection.faces import build_face_detector, detect_faces_batch, select_face, too_small_for_detection

STRICT_THRESHOLDS = [0.8, 0.9, 0.995]  # each stage drops more candidates: some photos lose faces, not all


def _varied_photos() -> list[Image.Image]:
    """scikit-image's photos, and crops and rescales of the astronaut of many sizes and aspect ratios: faces
    whole, cut by the photo's edge, small, large; photos without a face; a tiny and a too-small photo."""
    from skimage import data

    astronaut = Image.fromarray(data.astronaut())
    photos = [astronaut, Image.fromarray(data.coffee()), Image.fromarray(data.camera()).convert("RGB")]
    photos += [Image.fromarray(data.chelsea()), Image.fromarray(data.rocket())]
    crops = [(0, 0, 512, 512), (100, 0, 350, 250), (150, 30, 300, 220), (60, 0, 512, 300), (0, 0, 260, 512)]
    crops += [(190, 40, 512, 512), (0, 90, 400, 400), (120, 10, 280, 140)]  # the last two cut through the face
    sizes = [(97, 131), (250, 250), (250, 250), (333, 187), (180, 420), (611, 389), (150, 150), (452, 300)]
    sizes += [(275, 301), (400, 123), (70, 60), (520, 520), (129, 257), (360, 480), (222, 333), (301, 199)]
    for number, size in enumerate(sizes):
        photos.append(astronaut.crop(crops[number % len(crops)]).resize(size, Image.BILINEAR))
    photos.append(astronaut.resize((40, 32)))  # tiny: MTCNN searches it, finds nothing
    photos.append(astronaut.resize((15, 15)))  # too small to search at all
    photos.append(Image.new("RGB", (300, 200), (128, 128, 128)))  # no candidate even in the first stage
    return photos


@pytest.fixture(scope="module")
def photos():
    return _varied_photos()


@pytest.fixture(scope="module", params=["default thresholds", "strict thresholds"])
def config_and_detector(request):
    config = Config()
    detector = build_face_detector(config)  # the detector infer.py and data_prep.py use
    if request.param == "strict thresholds":
        detector.thresholds = STRICT_THRESHOLDS
    return config, detector


def _alone(detector: MTCNN, photo: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """MTCNN.detect on the photo alone, clipped to it as detect_faces_batch clips."""
    if too_small_for_detection(photo.size, Config()):  # facenet-pytorch crashes on it
        return np.empty((0, 4)), np.empty(0)
    boxes, probabilities = detector.detect(photo)
    if boxes is None:
        return np.empty((0, 4)), np.empty(0)
    boxes, probabilities = np.asarray(boxes, dtype=np.float64), np.asarray(probabilities, dtype=np.float64)
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, photo.width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, photo.height)
    return boxes, probabilities


def test_the_photos_are_varied_enough_to_need_several_buckets_and_hold_faces_and_none(photos):
    assert len({photo.size for photo in photos}) >= 20
    assert max(_level_buckets(photos, Config(), 0.709)) >= 3
    config = Config()
    found = [len(faces) for faces in detect_faces_batch(MTCNN(keep_all=True), photos, config)]
    assert found.count(0) >= 4
    assert sum(count > 0 for count in found) >= 15


@pytest.fixture(scope="module")
def together_and_alone(config_and_detector, photos):
    """detect_faces_batch on all the photos at once, and MTCNN.detect on each photo alone."""
    config, detector = config_and_detector
    return detect_faces_batch(detector, photos, config), [_alone(detector, photo) for photo in photos]


def test_bucketed_detection_finds_as_many_faces_as_each_photo_alone(together_and_alone):
    together, alone = together_and_alone
    assert [len(faces) for faces in together] == [len(boxes) for boxes, _ in alone]


def test_bucketed_boxes_are_within_a_pixel_of_each_photo_alone(together_and_alone, photos):
    together, alone = together_and_alone
    for photo, faces, (boxes, probabilities) in zip(photos, together, alone):
        np.testing.assert_allclose(faces.boxes, boxes, atol=1.0, err_msg=f"photo of {photo.size}")
        np.testing.assert_allclose(faces.probabilities, probabilities, atol=1e-4)


@pytest.mark.parametrize("rule", FACE_SELECTION_CHOICES)
def test_bucketed_detection_chooses_the_same_face_as_each_photo_alone(together_and_alone, photos, rule):
    together, alone = together_and_alone
    for photo, faces, (boxes, probabilities) in zip(photos, together, alone):
        if len(boxes):
            chosen_alone = select_face(boxes, probabilities, rule, photo.size)
            assert select_face(faces.boxes, faces.probabilities, rule, photo.size) == chosen_alone


def test_results_come_back_in_input_order(config_and_detector, together_and_alone, photos):
    config, detector = config_and_detector
    backwards = detect_faces_batch(detector, photos[::-1], config)[::-1]
    for ahead, behind in zip(together_and_alone[0], backwards):
        np.testing.assert_allclose(ahead.boxes, behind.boxes, atol=1e-3)


def test_a_chunk_without_any_face_answers_no_face_for_each_photo(config_and_detector, photos):
    config, detector = config_and_detector
    faceless = [photos[1], photos[-1], photos[-2], photos[-3]]  # coffee, grey, too small, tiny
    assert [len(faces) for faces in detect_faces_batch(detector, faceless, config)] == [0, 0, 0, 0]


def _level_buckets(photos, config: Config, factor: float) -> list[int]:
    """How many size buckets each pyramid level of `photos` makes: batched_mtcnn's rule, level by level."""
    pyramids = [pyramid_scales(p.height, p.width, config.mtcnn_min_face_size, factor) for p in photos]
    counts = []
    for level in range(max(map(len, pyramids))):
        members = [(p, s[level]) for p, s in zip(photos, pyramids) if len(s) > level]
        counts.append(len(size_buckets([(int(p.width * s + 1), int(p.height * s + 1)) for p, s in members])))
    return counts


def test_first_network_runs_once_per_level_bucket_and_the_later_ones_on_full_batches_of_all_photos(photos):
    config = Config()
    detector = MTCNN(min_face_size=config.mtcnn_min_face_size, keep_all=True)
    batches = {"pnet": [], "rnet": [], "onet": []}  # the batch size of every call
    for name, layer in (("pnet", detector.pnet.conv1), ("rnet", detector.rnet), ("onet", detector.onet)):
        layer.register_forward_hook(lambda _, inputs, __, name=name: batches[name].append(len(inputs[0])))
    searched = [photo for photo in photos if not too_small_for_detection(photo.size, config)]
    detect_faces_batch(detector, searched, config)
    photo_by_photo = sum(len(pyramid_scales(p.height, p.width, 20, detector.factor)) for p in searched)
    assert len(batches["pnet"]) == sum(_level_buckets(searched, config, detector.factor))
    assert len(batches["pnet"]) < photo_by_photo / 4
    # detect_face's own cap (fixed_batch_process) on the crops per call: every call but the last is full
    assert set(batches["rnet"][:-1]) <= {512}
    assert len(batches["onet"]) == 1


def test_size_buckets_group_sides_rounded_up_to_the_bucket_side_in_input_order():
    sizes = [(250, 250), (100, 60), (256, 193), (257, 250), (64, 64), (128, 64)]
    assert size_buckets(sizes, 64) == [[0, 2], [1, 5], [3], [4]]
