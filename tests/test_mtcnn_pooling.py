"""MTCNN's pooling layers in channels-last give exactly the maxima, and so exactly the boxes, of
facenet-pytorch's own layers."""

import numpy as np
import pytest
import torch
from facenet_pytorch import MTCNN

from config import Config
from face_match_age.detection.faces import build_face_detector, too_small_for_detection
from face_match_age.detection.mtcnn_pooling import ChannelsLastMaxPool2d
from tests.test_detection_buckets import _varied_photos

SHAPES = [(512, 28, 22, 22), (37, 32, 46, 46), (9, 48, 9, 9), (9, 64, 10, 10), (4, 10, 147, 139), (3, 10, 5, 4)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kernel", [2, 3])
def test_channels_last_pooling_gives_the_same_maxima_bit_for_bit(shape, kernel):
    features = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    features[0, 0, :2] = -torch.inf  # the padding PNet's batches carry
    features[-1, -1, -1, -1] = torch.nan
    expected = torch.nn.MaxPool2d(kernel, 2, ceil_mode=True)(features)
    for layout in (torch.contiguous_format, torch.channels_last):
        pooled = ChannelsLastMaxPool2d(kernel, 2, ceil_mode=True)(features.contiguous(memory_format=layout))
        assert pooled.is_contiguous(memory_format=layout)  # the next convolution gets what it got before
        torch.testing.assert_close(pooled, expected, rtol=0, atol=0, equal_nan=True)


def test_the_cpu_detector_pools_in_channels_last_and_finds_exactly_mtcnns_boxes():
    detector = build_face_detector(Config())
    pools = [layer for net in (detector.pnet, detector.rnet, detector.onet) for layer in net.children()]
    assert sum(isinstance(layer, ChannelsLastMaxPool2d) for layer in pools) == 6  # PNet 1, RNet 2, ONet 3
    plain = MTCNN(min_face_size=Config().mtcnn_min_face_size, keep_all=True, select_largest=False)
    faces = 0
    for photo in [p for p in _varied_photos() if not too_small_for_detection(p.size, Config())]:  # MTCNN crashes
        ours, theirs = detector.detect(photo), plain.detect(photo)
        for got, expected in zip(ours, theirs, strict=True):
            assert (got is None) == (expected is None)
            if got is not None:
                np.testing.assert_array_equal(got, expected)
                faces += len(got)
    assert faces >= 8
