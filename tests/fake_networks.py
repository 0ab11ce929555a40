"""Network stand-ins for tests: random InceptionResnetV1 weights in the released files' layout,
with BatchNorm statistics that make outputs depend on the input, and face-shaped tensors."""

from __future__ import annotations

from pathlib import Path

import torch


def calibrate_batchnorm(network: torch.nn.Module, seed: int = 0) -> None:
    """Give a random network realistic BatchNorm statistics. With the initial ones (mean 0, variance 1)
    activations saturate in eval mode and every input gets the same output; tests need outputs that
    depend on the face."""
    generator = torch.Generator().manual_seed(seed)
    for module in network.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # a plain average over the calibration batches
    network.train()
    with torch.no_grad():
        for _ in range(2):
            network(torch.rand(8, 3, 160, 160, generator=generator) * 2 - 1)
    for module in network.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = 0.1
    network.eval()


def write_facenet_weights(path: Path, num_classes: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A randomly initialised InceptionResnetV1 state dict with the layout of the released files."""
    from face_match_age.network.weights import save_random_weights

    name = {8631: "vggface2", 10575: "casia-webface"}[num_classes]
    torch.manual_seed(seed)
    save_random_weights(path, name, adjust=lambda network: calibrate_batchnorm(network, seed))
    return torch.load(path, weights_only=True)


def random_faces(count: int, seed: int = 0) -> torch.Tensor:
    """Standardised face-shaped tensors (count x 3 x 160 x 160) with a fixed seed."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(count, 3, 160, 160, generator=generator) * 255 - 127.5) / 128
