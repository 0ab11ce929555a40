"""MTCNN face detection and the rule that picks one face when a photo holds several.

The detector is built once from the config, so data_prep.py (training crops) and infer.py (inference
crops) cut faces with the same margin and size: training sees exactly what inference sees. MTCNN's
weights ship inside facenet-pytorch, so detection works offline.
"""

from __future__ import annotations

import numpy as np
import torch
from facenet_pytorch import MTCNN

from config import Config


def build_face_detector(config: Config, device: torch.device | str = "cpu") -> MTCNN:
    """MTCNN returning every face as 0..255 pixels (post_process=False): `imaging.face_to_tensor`
    applies the one standardisation, so it is never done twice."""
    return MTCNN(image_size=config.img_size, margin=config.mtcnn_margin, min_face_size=config.mtcnn_min_face_size,
                 post_process=False, keep_all=True, select_largest=False, device=device)


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
