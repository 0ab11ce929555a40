"""Pretrained weights resolve exactly where facenet-pytorch looks ($TORCH_HOME/checkpoints)."""

from pathlib import Path

import pytest
import torch
from facenet_pytorch import InceptionResnetV1
from facenet_pytorch.models.inception_resnet_v1 import get_torch_home
from fake_networks import write_facenet_weights

from face_match_age.network import weights
from face_match_age.network.weights import PretrainedWeightsError, load_backbone, weights_path


def test_weights_path_follows_torch_home(empty_torch_home):
    assert weights_path("vggface2") == empty_torch_home / "checkpoints" / "20180402-114759-vggface2.pt"
    assert weights_path("casia-webface").name == "20180408-102900-casia-webface.pt"


def test_file_placed_by_hand_is_loaded_offline(torch_home_with_vggface2):
    backbone = load_backbone("vggface2")
    for name, tensor in backbone.state_dict().items():
        assert torch.equal(tensor, torch_home_with_vggface2[name]), name
    assert not hasattr(backbone, "logits")  # the identity classifier is dropped
    embedding = backbone.eval()(torch.zeros(1, 3, 160, 160))
    assert embedding.shape == (1, 512)


def test_facenet_pytorch_reads_the_same_file(torch_home_with_vggface2):
    reference = InceptionResnetV1(pretrained="vggface2").eval()
    ours = load_backbone("vggface2").eval()
    faces = torch.randn(2, 3, 160, 160)
    assert torch.allclose(reference(faces), ours(faces), atol=1e-6)


def test_missing_weights_without_network_give_one_clear_message(empty_torch_home):
    with pytest.raises(PretrainedWeightsError) as error:
        load_backbone("vggface2")
    message = str(error.value)
    for part in (
        "20180402-114759-vggface2.pt",
        str(empty_torch_home / "checkpoints"),
        "TORCH_HOME",
        weights.PRETRAINED["vggface2"].url,
        "--pretrained none",
    ):
        assert part in message
    assert "Traceback" not in message
    assert not list((empty_torch_home / "checkpoints").glob("*.pt"))


def test_missing_weights_are_downloaded_into_torch_home(empty_torch_home, http_dir, monkeypatch):
    folder, base_url, log = http_dir
    served = write_facenet_weights(folder / "20180408-102900-casia-webface.pt", 10575, seed=3)
    monkeypatch.setattr(weights, "_RELEASE_URL", base_url)
    backbone = load_backbone("casia-webface")
    assert (empty_torch_home / "checkpoints" / "20180408-102900-casia-webface.pt").is_file()
    assert torch.equal(backbone.last_linear.weight, served["last_linear.weight"])
    load_backbone("casia-webface")
    assert len(log) == 1  # the second call reuses the file


def test_corrupt_or_foreign_files_are_named(empty_torch_home):
    path = weights_path("vggface2")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"<html>rate limited</html>")
    with pytest.raises(
        PretrainedWeightsError, match=r"weights file .* is damaged: it is not a PyTorch checkpoint archive.*Delete it"
    ):
        load_backbone("vggface2")
    torch.save({"conv.weight": torch.zeros(1)}, path)
    with pytest.raises(PretrainedWeightsError, match="expected layout"):
        load_backbone("vggface2")


def test_random_backbone_needs_no_file(empty_torch_home):
    assert load_backbone("none")(torch.zeros(2, 3, 160, 160)).shape == (2, 512)
    assert not empty_torch_home.exists()


def test_weights_file_can_be_named_directly(tmp_path, empty_torch_home):
    state = write_facenet_weights(tmp_path / "mine.pt", 8631, seed=5)
    backbone = load_backbone("vggface2", weights_file=tmp_path / "mine.pt")
    assert torch.equal(backbone.last_bn.running_mean, state["last_bn.running_mean"])


def test_a_broken_file_the_user_named_is_not_met_with_download_advice(tmp_path, empty_torch_home):
    # Deleting the file and running again only downloads a fresh copy of the file kept in TORCH_HOME.
    named = tmp_path / "mine.pt"
    write_facenet_weights(named, 8631)
    named.write_bytes(named.read_bytes()[:1000])
    with pytest.raises(PretrainedWeightsError) as truncated:
        load_backbone("vggface2", weights_file=named)
    torch.save({"conv.weight": torch.zeros(1)}, named)
    with pytest.raises(PretrainedWeightsError) as foreign:
        load_backbone("vggface2", weights_file=named)
    for error in (truncated.value, foreign.value):
        assert str(named) in str(error)
        assert "name another file" in str(error)
        assert "Delete it" not in str(error)
        assert "to download" not in str(error)


@pytest.mark.parametrize(
    "environment",
    [
        {"TORCH_HOME": "{tmp}/torch-home", "XDG_CACHE_HOME": "{tmp}/ignored-cache"},
        {"TORCH_HOME": None, "XDG_CACHE_HOME": "{tmp}/cache"},
        {"TORCH_HOME": None, "XDG_CACHE_HOME": None},
        {"TORCH_HOME": "~/torch-home", "XDG_CACHE_HOME": None},
    ],
)
def test_weights_folder_is_where_facenet_pytorch_downloads(environment, tmp_path, monkeypatch):
    # facenet-pytorch downloads into os.path.join(get_torch_home(), "checkpoints"). get_torch_home is not
    # exported, so the toolkit has its own copy of the rule; this fails when the two folders part.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for variable, value in environment.items():
        if value is None:
            monkeypatch.delenv(variable, raising=False)
        else:
            monkeypatch.setenv(variable, value.format(tmp=tmp_path))
    facenet_folder = Path(get_torch_home()) / "checkpoints"
    assert weights_path("vggface2").parent == facenet_folder
