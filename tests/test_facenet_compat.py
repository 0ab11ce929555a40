"""facenet-pytorch 2.6.0 pins torch<2.3, numpy<2 and Pillow<10.3; the package depends on 2.5.3, the same
networks without those pins (docs/install.md: Installing the package). These tests prove its MTCNN and InceptionResnetV1
work on the versions uv.lock installs."""

import numpy as np
import PIL
import torch
from facenet_pytorch import InceptionResnetV1
from packaging.version import Version

from config import Config
from face_match_age.detection.faces import build_face_detector, select_face
from face_match_age.detection.imaging import face_to_tensor


def test_locked_versions_are_the_current_ones_not_facenets_pins():
    assert Version(torch.__version__.split("+")[0]) >= Version("2.3")
    assert Version(np.__version__) >= Version("2.0")
    assert Version(PIL.__version__) >= Version("10.3")


def test_mtcnn_finds_the_astronauts_face(astronaut):
    detector = build_face_detector(Config())
    boxes, probabilities = detector.detect(astronaut)
    assert boxes is not None
    assert probabilities.max() > 0.95
    x1, y1, x2, y2 = boxes[int(np.argmax(probabilities))]
    # Eileen Collins' face in scikit-image's 512x512 photo sits around x 170-260, y 60-180.
    assert 140 < (x1 + x2) / 2 < 280
    assert 50 < (y1 + y2) / 2 < 190
    assert 50 < x2 - x1 < 150


def test_mtcnn_finds_no_face_in_a_cup_of_coffee(coffee):
    boxes, _probabilities = build_face_detector(Config()).detect(coffee)
    assert boxes is None


def test_mtcnn_crops_feed_the_one_preprocessing(astronaut):
    crops = build_face_detector(Config())(astronaut)  # keep_all: N x 3 x 160 x 160 pixels 0..255
    assert crops.ndim == 4
    assert crops.shape[1:] == (3, 160, 160)
    assert crops.min() >= 0  # raw pixels, not already standardised
    assert crops.max() > 1.5
    face = face_to_tensor(crops[0])
    assert -1.0 <= face.min()
    assert face.max() <= 1.0


def test_inception_resnet_gives_unit_512d_embeddings(astronaut):
    crop = build_face_detector(Config())(astronaut)[0]
    network = InceptionResnetV1(pretrained=None).eval()
    with torch.no_grad():
        embedding = network(face_to_tensor(crop).unsqueeze(0))
    assert embedding.shape == (1, 512)
    assert torch.isclose(embedding.norm(), torch.tensor(1.0), atol=1e-5)


def test_each_face_selection_rule_picks_its_own_face():
    boxes = np.array([[0, 0, 100, 100], [400, 400, 450, 450], [230, 230, 280, 280]], dtype=float)
    probabilities = np.array([0.90, 0.999, 0.95])
    assert select_face(boxes, probabilities, "largest", (500, 500)) == 0
    assert select_face(boxes, probabilities, "probability", (500, 500)) == 1
    assert select_face(boxes, probabilities, "center", (500, 500)) == 2
