"""facenet-pytorch's MTCNN over photos of different sizes in few network calls, each photo getting the answer
`MTCNN.detect` gives it alone.

`MTCNN.detect` batches only photos of one size, so a collection of varied sizes (IMDB-WIKI) runs photo by
photo. Letterboxing the photos into one size and calling it does not give each photo its own answer:
`detect_face` shrinks the whole padded photo to each pyramid scale with area interpolation, to
int(side * scale + 1) pixels, so padding changes which pixels are averaged into every cell of every level.
Measured on 44 rescaled and cropped astronauts padded to sides rounded up to 32, 64 or 128 pixels: boxes moved
by up to 8 pixels and one face was lost, whatever the padding colour. So the pyramid is built here per photo,
exactly as `detect_face` builds it, and only its levels are letterboxed (top-left, so a cell keeps its
coordinates) for the first network, whose cells outside a photo's own level are ignored; the second and third
networks look at 24- and 48-pixel crops, which every photo's candidates share in one batch whatever its size.

This reuses `detect_face`'s helpers (facenet_pytorch.models.utils.detect_face, not a public API, wrapped in
detection/facenet_internals.py); tests/test_detection_buckets.py compares every result with `MTCNN.detect` on
each photo alone, so a release that changes the algorithm fails it loudly, and pyproject.toml pins the version.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from facenet_pytorch import MTCNN
from PIL import Image
from torchvision.ops import batched_nms

from face_match_age.detection.facenet_internals import (
    batched_nms_numpy,
    bbreg,
    fixed_batch_process,
    generateBoundingBox,
    imresample,
    rerec,
)

# The bucketing rule: at each pyramid level, the photos' levels whose sides round up to the same multiple of
# BUCKET_SIDE level pixels share one PNet call, letterboxed into the largest of them. A fixed side in level pixels
# grows with depth in photo pixels (128 is 213 photo pixels at the first level for 20-pixel faces, ~1,700 at the
# seventh): the large first levels, where PNet's time goes to pixels, stay tightly grouped, and the small deep
# levels, where it goes to per-call overhead, merge into one or two calls. Measured by bench.detection on chunks
# of 16 IMDB-like photos (REPORT.md): 128 makes 26 PNet calls per chunk instead of 135 photo by photo, for 35%
# more pixels searched; 32 makes 72 calls for 3%; 512 makes 11 calls for 2.4 times the pixels and ran only a
# little faster (1.63x against 1.43x), within the noise of a shared 2-core machine. Photos of one size (CACD)
# are never padded.
BUCKET_SIDE = 128


def size_buckets(sizes: list[tuple[int, int]], side: int = BUCKET_SIDE) -> list[list[int]]:
    """Indices of `sizes` (width, height) grouped by their sides rounded up to a multiple of `side`, each group
    in input order, the groups in the order of their first photo."""
    buckets: dict[tuple[int, int], list[int]] = {}
    for index, (width, height) in enumerate(sizes):
        buckets.setdefault((math.ceil(width / side), math.ceil(height / side)), []).append(index)
    return list(buckets.values())


@torch.inference_mode()
def detect_boxes(
    detector: MTCNN, images: list[Image.Image], bucket_side: int = BUCKET_SIDE
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(boxes N x 4 as x1 y1 x2 y2, probabilities N) of every RGB photo, in input order: what
    `detector.detect(photo)` answers for each photo alone (None there is an empty array here), within floating
    point. A photo too small for the detector's pyramid has no boxes."""
    dtype = next(detector.pnet.parameters()).dtype  # detect_face feeds the networks in their own precision
    pixels = [_as_tensor(image, detector.device, dtype) for image in images]
    boxes, owners = _proposals(detector, pixels, bucket_side)
    if len(boxes):
        boxes, owners, regression = _scored(detector.rnet, pixels, boxes, owners, 24, detector.thresholds[1])
        pick = batched_nms(boxes[:, :4], boxes[:, 4], owners, 0.7)
        boxes, owners = rerec(bbreg(boxes[pick], regression[pick])), owners[pick]
    if len(boxes):
        boxes, owners, regression = _scored(detector.onet, pixels, boxes, owners, 48, detector.thresholds[2])
        boxes = bbreg(boxes, regression)
        pick = batched_nms_numpy(boxes[:, :4], boxes[:, 4], owners, 0.7, "Min")
        boxes, owners = boxes[pick], owners[pick]
    boxes, owners = boxes.cpu().numpy().astype(np.float64), owners.cpu().numpy()
    return [(boxes[owners == index, :4], boxes[owners == index, 4]) for index in range(len(images))]


def _as_tensor(image: Image.Image, device, dtype: torch.dtype) -> torch.Tensor:
    array = torch.as_tensor(np.array(image, dtype=np.uint8), device=device)  # np.array copies: torch may keep it
    return array.permute(2, 0, 1).unsqueeze(0).to(dtype)


def pyramid_scales(height: int, width: int, min_face_size: int, factor: float) -> list[float]:
    """The scales of detect_face's image pyramid for a photo: its loop, float for float, so a photo gets exactly
    its own levels."""
    scale, short_side, scales = 12.0 / min_face_size, min(height, width) * (12.0 / min_face_size), []
    while short_side >= 12:
        scales.append(scale)
        scale, short_side = scale * factor, short_side * factor
    return scales


def _proposals(detector: MTCNN, pixels: list[torch.Tensor], bucket_side: int):
    """First stage: candidate boxes (x1 y1 x2 y2 score, M x 5) and the photo each belongs to, regressed and
    squared, after detect_face's per-level and per-photo suppression."""
    pyramids = [pyramid_scales(p.shape[2], p.shape[3], detector.min_face_size, detector.factor) for p in pixels]
    candidates, candidate_owners = [], []
    for level in range(max(map(len, pyramids), default=0)):
        members = [index for index, scales in enumerate(pyramids) if len(scales) > level]
        scale = pyramids[members[0]][level]  # every pyramid has the same scales, some more of them
        levels = [
            imresample(pixels[i], (int(pixels[i].shape[2] * scale + 1), int(pixels[i].shape[3] * scale + 1)))
            for i in members
        ]
        level_boxes, level_owners = [], []
        for bucket in size_buckets([(level.shape[3], level.shape[2]) for level in levels], bucket_side):
            boxes, rank = _first_network(detector, [levels[i] for i in bucket], scale)
            level_boxes.append(boxes)
            level_owners.append(torch.as_tensor([members[i] for i in bucket], device=boxes.device)[rank])
        boxes, owned_by = torch.cat(level_boxes), torch.cat(level_owners)
        pick = batched_nms(boxes[:, :4], boxes[:, 4], owned_by, 0.5)
        candidates.append(boxes[pick])
        candidate_owners.append(owned_by[pick])
    if not candidates:
        return torch.empty(0, 5, device=detector.device), torch.empty(0, dtype=torch.long, device=detector.device)
    boxes, owners = torch.cat(candidates), torch.cat(candidate_owners)
    pick = batched_nms(boxes[:, :4], boxes[:, 4], owners, 0.7)
    boxes, owners = boxes[pick], owners[pick]
    width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    corners = boxes[:, :4] + boxes[:, 5:9] * torch.stack([width, height, width, height], dim=1)
    return rerec(torch.cat([corners, boxes[:, 4:5]], dim=1)), owners


def _first_network(detector: MTCNN, levels: list[torch.Tensor], scale: float):
    """PNet's candidate boxes (x1 y1 x2 y2 score, 4 regressions) on one pyramid level (at `scale`) of a few
    photos, and which of them each box belongs to. The levels are letterboxed into the largest one; the batch
    answers each photo's own cells as its level alone would."""
    sizes = [level.shape[2:] for level in levels]
    batch = levels[0].new_zeros(len(levels), 3, max(h for h, _ in sizes), max(w for _, w in sizes))
    for index, level in enumerate(levels):
        batch[index, :, : level.shape[2], : level.shape[3]] = (level[0] - 127.5) * 0.0078125
    pnet = detector.pnet
    features = pnet.prelu1(pnet.conv1(batch))
    for index, (height, width) in enumerate(sizes):
        # PNet's pooling rounds up: alone, a photo's last pooling cell may hold a single feature; here that cell
        # also covers padding, which must never win its maximum.
        features[index, :, height - 2 :] = -torch.inf
        features[index, :, :, width - 2 :] = -torch.inf
    features = pnet.prelu3(pnet.conv3(pnet.prelu2(pnet.conv2(pnet.pool1(features)))))
    probabilities = pnet.softmax4_1(pnet.conv4_1(features))[:, 1]
    outside = torch.ones_like(probabilities, dtype=torch.bool)
    for index, (height, width) in enumerate(sizes):
        outside[index, : math.ceil((height - 2) / 2) - 4, : math.ceil((width - 2) / 2) - 4] = False
    probabilities = probabilities.masked_fill(outside, 0.0)  # padding cells (NaN after -inf) never pass
    return generateBoundingBox(pnet.conv4_2(features), probabilities, scale, detector.thresholds[0])


def _scored(network, pixels: list[torch.Tensor], boxes: torch.Tensor, owners: torch.Tensor, side: int, threshold):
    """The boxes the second (RNet, side 24) or third (ONet, side 48) network scores above `threshold`, with their
    owners and that network's box regressions: detect_face's stage, each crop clamped to its own photo."""
    crops = []
    corners = boxes.trunc().int().cpu().numpy()
    for (left, top, right, bottom), owner in zip(corners[:, :4], owners.tolist()):
        height, width = pixels[owner].shape[2:]
        x1, y1, x2, y2 = max(left, 1), max(top, 1), min(right, width), min(bottom, height)
        if y2 > y1 - 1 and x2 > x1 - 1:  # detect_face skips empty crops the same way
            crops.append(imresample(pixels[owner][:, :, y1 - 1 : y2, x1 - 1 : x2], (side, side)))
    outputs = fixed_batch_process((torch.cat(crops) - 127.5) * 0.0078125, network)
    scores = outputs[-1][:, 1]
    passed = scores > threshold
    return torch.cat([boxes[passed, :4], scores[passed, None]], dim=1), owners[passed], outputs[0][passed]
