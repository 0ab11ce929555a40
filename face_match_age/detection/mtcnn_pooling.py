"""MTCNN's max-pooling layers computed on a channels-last copy of their input: the same maxima, bit for bit,
in a fraction of the time on a CPU.

PyTorch's CPU max-pooling of contiguous (NCHW) tensors is slow for MTCNN's shapes, many small crops with
few channels: profiled over 40 distinct 250-pixel photos, its pools took 16% of `analyze_many`'s CPU time,
30 ms for each RNet batch of 512 crops of 28 x 22 x 22. Its channels-last kernel, including the two copies,
ran 1.8 to 5.6 times faster on MTCNN's shapes in two runs of a micro-benchmark (REPORT.md has the end-to-end
figures). A maximum does not depend on the order it is taken in,
so the boxes are exactly those of facenet-pytorch's own layers (tests/test_mtcnn_pooling.py), as long as
each output keeps the memory format the next convolution received before: the convolutions round
differently in the other format.
"""

from __future__ import annotations

import torch
from facenet_pytorch import MTCNN


class ChannelsLastMaxPool2d(torch.nn.MaxPool2d):
    """torch.nn.MaxPool2d computed in channels-last, its output in the memory format torch.nn.MaxPool2d gives:
    the next convolution rounds differently in the other format (PNet's input, a permuted photo, is already
    channels-last; RNet's and ONet's crops are contiguous)."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        pooled = super().forward(features.contiguous(memory_format=torch.channels_last))
        return pooled.contiguous() if features.is_contiguous() else pooled


def use_channels_last_pooling(detector: MTCNN) -> MTCNN:
    """Replace every max-pooling layer of the detector's three networks, in place; returns the detector."""
    for network in (detector.pnet, detector.rnet, detector.onet):
        for name, layer in list(network.named_children()):
            if type(layer) is torch.nn.MaxPool2d:
                settings = {key: getattr(layer, key) for key in ("kernel_size", "stride", "padding", "dilation")}
                setattr(network, name, ChannelsLastMaxPool2d(**settings, ceil_mode=layer.ceil_mode))
    return detector
