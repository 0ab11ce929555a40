"""Shared test fixtures: real photos from scikit-image, pretrained-weight files with the real key
layout in a temporary TORCH_HOME, and a local HTTP server. No test touches the internet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fake_networks import calibrate_batchnorm, write_facenet_weights
from http_server import serve_directory
from PIL import Image


def pytest_configure(config):
    """Denormal floats (below 1.2e-38) flushed to zero in the tests' process (the probes do the same). Tiny CPU
    trainings meet them (in the gradients and Adam's moments of the random networks) and x86 CPUs handle them 10
    to 100 times slower than normal floats: test_resume_continues_exactly_where_training_stopped took 123 s
    without, 9 s with (2 cores, load 3). Their contribution to any figure the tests check is far below float32's
    precision. Set before any test starts torch's threads, so that they inherit it."""
    torch.set_flush_denormal(True)


@pytest.fixture(autouse=True)
def _offline_and_quick(monkeypatch):
    """Downloads never leave this machine in tests, and failed attempts are retried without waiting."""
    from face_match_age.files import downloader
    from face_match_age.network import weights

    monkeypatch.setattr(downloader, "BACKOFF_S", 0.0)
    monkeypatch.setattr(weights, "_RELEASE_URL", "http://127.0.0.1:9/unreachable/")  # port 9: nothing listens


@pytest.fixture(scope="session")
def astronaut() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut())


@pytest.fixture(scope="session")
def coffee() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.coffee())


@pytest.fixture(scope="session")
def _vggface2_file(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    torch_home = tmp_path_factory.mktemp("torch_home")
    state_dict = write_facenet_weights(torch_home / "checkpoints" / "20180402-114759-vggface2.pt", 8631)
    return torch_home, state_dict


@pytest.fixture
def torch_home_with_vggface2(_vggface2_file, monkeypatch) -> dict[str, torch.Tensor]:
    """TORCH_HOME pointing at a folder holding (random) VGGFace2-layout weights; returns their state dict."""
    torch_home, state_dict = _vggface2_file
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    return state_dict


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "empty_torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


@pytest.fixture
def http_dir(tmp_path):
    """A folder served over HTTP on 127.0.0.1 (with Range support); yields (folder, base_url, log)."""
    folder = tmp_path / "served"
    folder.mkdir()
    with serve_directory(folder) as (base_url, log):
        yield folder, base_url, log


@pytest.fixture
def rgb_photo() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (120, 90, 3), dtype=np.uint8))


@pytest.fixture(scope="session")
def age_checkpoint(tmp_path_factory) -> Path:
    """An age-model checkpoint in Lightning's layout (random weights), as train.py would save it."""
    from model import AgeEstimationModel, save_age_checkpoint

    torch.manual_seed(0)
    model = AgeEstimationModel(pretrained=None)
    calibrate_batchnorm(model)
    return save_age_checkpoint(model, tmp_path_factory.mktemp("age_model") / "best.ckpt")


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory, astronaut, coffee) -> Path:
    """Real photos from scikit-image, saved as a user would have them, plus edited copies."""
    folder = tmp_path_factory.mktemp("photos")
    astronaut.save(folder / "astronaut.jpg", quality=95)
    edited = astronaut.transpose(Image.FLIP_LEFT_RIGHT).crop((40, 20, 492, 470)).rotate(8, fillcolor=(0, 0, 0))
    edited.save(folder / "astronaut_edit.jpg", quality=95)
    coffee.save(folder / "coffee.jpg", quality=95)
    two = Image.new("RGB", (1000, 512), (128, 128, 128))
    two.paste(astronaut, (0, 0))
    two.paste(astronaut.resize((256, 256)), (560, 200))  # the smaller face sits nearer the centre
    two.save(folder / "two_people.jpg", quality=95)
    return folder
