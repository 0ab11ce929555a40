"""What train.py's checkpoints hold: best.ckpt is the model to use (weights, hyper-parameters and how to use it,
no optimizer state, a third of last.ckpt's size) and loads with weights_only=True into the network infer.py and
evaluate.py run; last.ckpt holds everything a resume needs. A model trained at --img-size 128 is evaluated
and served at 128, while the verification model keeps its own 160."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from synthetic import make_dataset, train_args

import evaluate
import train
from config import Config
from face_match_age.network.age_network import AgeNetwork, load_age_model, network_state_dict


@dataclass(frozen=True)
class Trained:
    config: Config
    best: Path
    last: Path


@pytest.fixture(scope="module")
def trained_at_128(tmp_path_factory) -> Trained:
    """One epoch of train.py at --img-size 128 on 96-pixel crops (the loader resizes them, as it would 160-pixel
    crops from data_prep.py)."""
    config = make_dataset(tmp_path_factory.mktemp("img_size_128") / "data", train=8, val=4, size=96)
    config = config.replace(img_size=128, max_epochs=1)
    with contextlib.redirect_stdout(io.StringIO()):
        assert train.main(train_args(config)) == 0
    return Trained(config, config.checkpoint_dir / "best.ckpt", config.checkpoint_dir / "last.ckpt")


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)  # plain data: nothing in it can run code


def test_best_holds_the_model_to_use_and_no_optimizer_state(trained_at_128):
    best, last = _load(trained_at_128.best), _load(trained_at_128.last)
    assert not {"optimizer_states", "lr_schedulers", "callbacks"} & set(best)
    assert {"state_dict", "hyper_parameters", "usage"} <= set(best)
    usage = best["usage"]
    assert usage["input_size"] == 128
    assert usage["head_hidden_dim"] == best["hyper_parameters"]["head_hidden_dim"] == 256
    assert (usage["age_bins"], usage["min_age"], usage["max_age"]) == (101, 0, 100)
    assert usage["standardization"] == "(pixels - 127.5) / 128"
    # last.ckpt is the whole training state, and says the same about using its model
    assert {"optimizer_states", "lr_schedulers", "callbacks", "loops", "state_dict"} <= set(last)
    assert last["optimizer_states"][0]["state"]  # Adam's moments
    assert last["usage"] == usage


def test_best_is_about_a_third_of_last(trained_at_128):
    best, last = trained_at_128.best.stat().st_size, trained_at_128.last.stat().st_size
    assert best < 0.4 * last, (best, last)  # Adam keeps two moments per weight: last is about 3x best


def test_best_loads_with_weights_only_into_the_network_infer_and_evaluate_run(trained_at_128):
    network = load_age_model(trained_at_128.best)  # the one loader of infer.py, evaluate.py and the API
    assert isinstance(network, AgeNetwork) and not network.training
    assert network.trained_img_size == 128
    weights = network_state_dict(_load(trained_at_128.best)["state_dict"])
    for name, tensor in network.state_dict().items():
        assert torch.equal(tensor, weights[name]), name


def test_infer_feeds_the_age_model_its_trained_size_and_verification_160(
    trained_at_128, torch_home_with_vggface2, photo_dir, monkeypatch
):
    from face_match_age.inference.analyzer import FaceAnalyzer

    analyzer = FaceAnalyzer(age_checkpoint=trained_at_128.best, device="cpu")  # the default config: img_size 160
    assert analyzer.age_input_size == 128
    seen = {"age": [], "verify": []}
    analyzer.age_model.register_forward_pre_hook(lambda _, inputs: seen["age"].append(inputs[0].shape[-1]))
    analyzer.verifier.register_forward_pre_hook(lambda _, inputs: seen["verify"].append(inputs[0].shape[-1]))
    result = analyzer.compare(photo_dir / "astronaut.jpg", photo_dir / "astronaut_edit.jpg")
    assert set(seen["age"]) == {128} and set(seen["verify"]) == {160}
    assert result["face_1"]["age"] is not None


def test_evaluate_measures_the_model_at_its_trained_size(trained_at_128, tmp_path, monkeypatch):
    seen = []
    real_forward = AgeNetwork.forward
    monkeypatch.setattr(
        AgeNetwork, "forward", lambda self, faces: seen.append(faces.shape[-1]) or real_forward(self, faces)
    )
    config = trained_at_128.config
    argv = ["age", "--images", str(config.val_dir), "--csv", str(config.val_csv), "--ckpt", str(trained_at_128.best)]
    with contextlib.redirect_stdout(io.StringIO()):
        assert evaluate.main([*argv, "--out", str(tmp_path / "eval"), "--device", "cpu"]) == 0
    assert seen and set(seen) == {128}


def test_last_resumes_and_best_is_refused_as_a_resume_point(trained_at_128, tmp_path):
    config = trained_at_128.config
    resumed = config.replace(checkpoint_dir=tmp_path / "resumed", log_dir=tmp_path / "logs" / "run", max_epochs=2)
    with contextlib.redirect_stdout(io.StringIO()):
        train.train(resumed.replace(resume_checkpoint=trained_at_128.last), progress_bar=False)
    after = _load(resumed.checkpoint_dir / "last.ckpt")
    assert after["epoch"] == 1 and after["global_step"] == 2 * 2  # one more epoch of 2 steps, not two
    with pytest.raises(train.TrainingSetupError) as refused:
        train.train(resumed.replace(resume_checkpoint=trained_at_128.best), progress_bar=False)
    assert "holds the age model's weights only (no optimizer_states" in str(refused.value)
    assert "use it with infer.py or evaluate.py --ckpt" in str(refused.value)
