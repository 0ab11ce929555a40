"""MTCNN face detection and the rule that picks one face when a photo holds several.

The detector is built once from the config, so data_prep.py (training crops) and infer.py (inference
crops) cut faces with the same margin and size: training sees exactly what inference sees. MTCNN's
weights ship inside facenet-pytorch, so detection works offline.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from facenet_pytorch import MTCNN
from PIL import Image

from face_match_age.detection.batched_mtcnn import detect_boxes
from face_match_age.detection.facenet_internals import extract_face
from face_match_age.detection.mtcnn_pooling import use_channels_last_pooling
from face_match_age.settings import Config


class NoFaceError(ValueError):
    """A photo in which MTCNN found no face (or one too small to hold a face it could find)."""


def build_face_detector(config: Config, device: torch.device | str = "cpu") -> MTCNN:
    """MTCNN returning every face as 0..255 pixels (post_process=False): `imaging.face_to_tensor`
    applies the one standardisation, so it is never done twice. On a CPU its pooling layers run in
    channels-last (mtcnn_pooling.py: the same boxes, faster)."""
    detector = MTCNN(
        image_size=config.img_size,
        margin=config.mtcnn_margin,
        min_face_size=config.mtcnn_min_face_size,
        post_process=False,
        keep_all=True,
        select_largest=False,
        device=device,
    )
    return use_channels_last_pooling(detector) if torch.device(device).type == "cpu" else detector


def select_face(boxes: np.ndarray, probabilities: np.ndarray, rule: str, image_size: tuple[int, int]) -> int:
    """Index of the face to use among `boxes` (N x 4, x1 y1 x2 y2) by `rule`:
    largest box area, highest detection probability, or centre nearest the photo's centre."""
    if len(boxes) == 0:
        raise ValueError("select_face needs at least one box")
    boxes = np.asarray(boxes, dtype=np.float64)
    if rule == "largest":
        scores = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    elif rule == "probability":
        scores = np.asarray(probabilities, dtype=np.float64)
    elif rule == "center":
        width, height = image_size
        centres = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
        scores = -np.hypot(centres[:, 0] - width / 2, centres[:, 1] - height / 2)
    else:
        raise ValueError(f"unknown face-selection rule {rule!r}; use largest, probability or center")
    return int(np.argmax(scores))


@dataclass
class DetectedFaces:
    boxes: np.ndarray  # N x 4, x1 y1 x2 y2 in the original photo's pixels, clipped to the photo
    probabilities: np.ndarray  # N, MTCNN's face probability
    crops: torch.Tensor  # N x 3 x S x S pixels 0..255, cut from the original photo with the configured margin

    def __len__(self) -> int:
        return len(self.boxes)


def detect_faces(detector: MTCNN, image: Image.Image, config: Config) -> DetectedFaces:
    """Every face of one RGB photo (see detect_faces_batch)."""
    return detect_faces_batch(detector, [image], config)[0]


def detect_faces_batch(detector: MTCNN, images: list[Image.Image], config: Config) -> list[DetectedFaces]:
    """Every face of each RGB photo, in input order, with crops ready for imaging.face_to_tensor.

    Photos larger than `config.detection_max_side` are shrunk for detection only (MTCNN's cost grows with the
    pixel count); the boxes are mapped back and the crops cut from the full-resolution photo. The photos are
    detected together whatever their sizes (batched_mtcnn.detect_boxes: size buckets, each photo answered as
    MTCNN answers it alone). A photo too small or too narrow for a face of `config.mtcnn_min_face_size` pixels
    (see too_small_for_detection) has no faces; MTCNN is not asked, and the photos it is asked about are never
    affected by it."""
    shrunk = [_for_detection(image, config.detection_max_side) for image in images]
    results = [_no_faces(config) for _ in images]
    searched = [
        i for i, (small, _) in enumerate(shrunk) if not _too_small_for_mtcnn(small.size, config.mtcnn_min_face_size)
    ]
    found = detect_boxes(detector, [shrunk[i][0] for i in searched])
    for index, (boxes, probabilities) in zip(searched, found):
        results[index] = _faces_in(images[index], boxes, probabilities, shrunk[index][1], config)
    return results


def require_faces(found: DetectedFaces, image_size: tuple[int, int], config: Config, source: str) -> DetectedFaces:
    """`found` when it holds a face; otherwise raises NoFaceError naming `source` and, for a photo too small
    to hold a face (see too_small_for_detection), saying so."""
    if len(found):
        return found
    message = f"no face found in {source}"
    if too_small_for_detection(image_size, config):
        width, height = image_size
        message += (
            f" (at {width}x{height} pixels it is too small or too narrow to hold a face of "
            f"mtcnn_min_face_size={config.mtcnn_min_face_size} pixels)"
        )
    raise NoFaceError(message)


def too_small_for_detection(size: tuple[int, int], config: Config) -> bool:
    """Whether a photo of `size` (width, height) is too small, or too narrow, to hold a face of
    `config.mtcnn_min_face_size` pixels once shrunk for detection: it is answered "no faces" unasked."""
    return _too_small_for_mtcnn(_detection_size(size, config.detection_max_side), config.mtcnn_min_face_size)


def _too_small_for_mtcnn(size: tuple[int, int], min_face_size: int) -> bool:
    # facenet-pytorch's detect_face builds its image pyramid while min(h, w) * 12 / min_face_size >= 12 and
    # concatenates the (empty) list of levels when there is none: torch.cat raises instead of "no face".
    # The same float expression as theirs, so the border case (a short side equal to min_face_size) agrees.
    return min(size) * (12.0 / min_face_size) < 12


def _detection_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    scale = min(1.0, max_side / max(size))
    if scale == 1.0:
        return size
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def _for_detection(image: Image.Image, max_side: int) -> tuple[Image.Image, float]:
    scale = min(1.0, max_side / max(image.size))
    if scale == 1.0:
        return image, scale
    return image.resize(_detection_size(image.size, max_side), Image.Resampling.BILINEAR), scale


def _no_faces(config: Config) -> DetectedFaces:
    return DetectedFaces(np.empty((0, 4)), np.empty(0), torch.empty(0, 3, config.img_size, config.img_size))


def _faces_in(image: Image.Image, boxes, probabilities, scale: float, config: Config) -> DetectedFaces:
    if len(boxes) == 0:
        return _no_faces(config)
    boxes = boxes / scale
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, image.width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, image.height)
    crops = torch.stack([extract_face(image, box, config.img_size, config.mtcnn_margin) for box in boxes])
    return DetectedFaces(boxes, np.asarray(probabilities, dtype=np.float64), crops)
