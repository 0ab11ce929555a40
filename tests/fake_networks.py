"""Network stand-ins for tests: random InceptionResnetV1 weights in the released files' layout,
with BatchNorm statistics that make outputs depend on the input, and face-shaped tensors."""

from __future__ import annotations

from pathlib import Path

import torch

from face_match_age.inference.numerics import calibrate_batchnorm  # one maker of calibrated weights, shared with bench/

# (num_classes, seed): the weights first made with them, and torch's random state after making them
_made: dict[tuple[int, int], tuple[dict[str, torch.Tensor], torch.Tensor]] = {}


def write_facenet_weights(path: Path, num_classes: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A randomly initialised InceptionResnetV1 state dict with the layout of the released files. The same
    classes and seed give the same weights: the first time by save_random_weights (built and calibrated, seconds
    on a CPU), then saved again from memory (a test may truncate or replace a file it was given), leaving torch's
    random state as making them would."""
    from face_match_age.network.weights import save_random_weights

    path = Path(path)
    made = _made.get((num_classes, seed))
    if made is None:
        name = {8631: "vggface2", 10575: "casia-webface"}[num_classes]
        torch.manual_seed(seed)
        save_random_weights(path, name, adjust=lambda network: calibrate_batchnorm(network, seed))
        _made[num_classes, seed] = torch.load(path, weights_only=True), torch.get_rng_state()
    else:
        state_dict, random_state = made
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state_dict, path)
        torch.set_rng_state(random_state)
    return torch.load(path, weights_only=True)


def random_faces(count: int, seed: int = 0, size: int = 160) -> torch.Tensor:
    """Standardised face-shaped tensors (count x 3 x size x size) with a fixed seed."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(count, 3, size, size, generator=generator) * 255 - 127.5) / 128
