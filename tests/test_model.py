import pickle
from pathlib import Path

import lightning as L
import pytest
import torch
from fake_networks import calibrate_batchnorm, random_faces
from torch.utils.data import DataLoader, TensorDataset

import model as model_module
from callbacks import FreezeBackbone, backbone_freezing
from config import Config
from face_match_age.exit_codes import ExitCode
from face_match_age.network.age_network import (
    CheckpointError,
    age_interval,
    age_kl_loss,
    age_std,
    expected_age,
    gaussian_label_distribution,
    load_age_model,
    network_state_dict,
)
from model import (
    AgeEstimationModel,
    CumulativeScore,
    build_age_model,
    save_age_checkpoint,
)


def _tiny_trainer(tmp_path, **overrides):
    settings = dict(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    return L.Trainer(**{**settings, **overrides})


def _tiny_loader(count=8, batch_size=4):
    ages = torch.linspace(5, 80, count).round()
    return DataLoader(TensorDataset(random_faces(count), ages), batch_size=batch_size)


def test_head_gives_101_age_logits():
    model = AgeEstimationModel(pretrained=None).eval()
    assert model(random_faces(3)).shape == (3, 101)


@pytest.mark.parametrize("age", [0, 1, 37, 99, 100])
def test_label_distribution_sums_to_one_and_peaks_at_the_age(age):
    distribution = gaussian_label_distribution(torch.tensor([age]), sigma=2.0)[0]
    assert distribution.shape == (101,)
    assert torch.isclose(distribution.sum(), torch.tensor(1.0))
    assert int(distribution.argmax()) == age
    assert (distribution >= 0).all()


def test_label_distribution_width_follows_sigma():
    narrow, wide = (gaussian_label_distribution(torch.tensor([50]), s)[0] for s in (1.0, 5.0))
    assert narrow[50] > wide[50]
    assert narrow[60] < wide[60]


@pytest.mark.parametrize("age", [0, 23, 100])
def test_expected_age_of_one_hot_logits_is_that_age(age):
    logits = torch.full((1, 101), -1e4)
    logits[0, age] = 0.0
    assert expected_age(logits).item() == pytest.approx(age, abs=1e-4)
    assert age_std(logits).item() == pytest.approx(0.0, abs=1e-3)


def test_age_interval_holds_the_central_mass():
    logits = gaussian_label_distribution(torch.tensor([40, 0]), 2.0).log()
    low, high = age_interval(logits, coverage=0.9).tolist()[0]
    assert low < 40 < high  # about 40 +- 1.645 sigma
    assert 4 <= high - low <= 8
    assert age_interval(logits).tolist()[1][0] == 0


def test_age_std_of_a_two_point_distribution():
    logits = torch.full((1, 101), -1e4)
    logits[0, 20] = logits[0, 30] = 0.0
    assert expected_age(logits).item() == pytest.approx(25.0, abs=1e-3)
    assert age_std(logits).item() == pytest.approx(5.0, abs=1e-3)


def test_loss_is_zero_only_for_the_target_distribution():
    ages = torch.tensor([10, 90])
    perfect_logits = gaussian_label_distribution(ages, 2.0).clamp_min(1e-30).log()
    assert age_kl_loss(perfect_logits, ages, 2.0).item() == pytest.approx(0.0, abs=1e-5)
    assert age_kl_loss(torch.zeros(2, 101), ages, 2.0).item() > 1.0


def test_cumulative_score_by_hand():
    metric = CumulativeScore(5.0)
    metric.update(torch.tensor([10.0, 20.0, 30.0, 40.0]), torch.tensor([15.0, 26.0, 30.0, 34.9]))
    assert metric.compute().item() == pytest.approx(0.5)  # |5| and |0| count; |6| and |5.1| do not


def test_loss_falls_when_overfitting_a_tiny_batch():
    torch.manual_seed(0)
    model = AgeEstimationModel(pretrained=None, learning_rate=1e-3, head_dropout=0.0)
    # 80 pixels, as the other training tests: the same layers learn, at a quarter of the cost of 160
    faces, ages = random_faces(4, size=80), torch.tensor([10, 30, 50, 70])
    optimizer = model.configure_optimizers()
    losses = []
    for _ in range(25):
        loss = age_kl_loss(model(faces), ages, 2.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0], losses
    with torch.no_grad():  # still in train mode: with 4 samples BatchNorm's running statistics lag behind
        assert (expected_age(model(faces)) - ages).abs().mean() < 5


def test_checkpoint_loads_with_no_other_argument_and_without_pretrained_weights(
    tmp_path, torch_home_with_vggface2, monkeypatch
):
    model = build_age_model(Config().replace(learning_rate=3e-4))  # vggface2 backbone from TORCH_HOME
    trainer = _tiny_trainer(tmp_path, limit_train_batches=1)
    trainer.fit(model, _tiny_loader())
    path = tmp_path / "age.ckpt"
    trainer.save_checkpoint(path)

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))  # the checkpoint must not need the weights
    loaded = AgeEstimationModel.load_from_checkpoint(path)
    assert loaded.hparams.pretrained == "vggface2"
    assert loaded.hparams.learning_rate == 3e-4
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    assert not (tmp_path / "empty").exists()
    inference_model = load_age_model(path)  # the same weights, without Lightning
    assert not inference_model.training
    assert inference_model.hparams["learning_rate"] == 3e-4
    faces = random_faces(2)
    prediction = inference_model.predict(faces)
    with torch.no_grad():
        assert torch.allclose(inference_model(faces), loaded.eval()(faces), atol=1e-5)
    assert prediction["age"].shape == (2,)
    assert (prediction["age_std"] >= 0).all()
    assert prediction["age_interval"].shape == (2, 2)


class _Payload:
    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_checkpoint_with_a_code_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "payload_ran"
    payload = _Payload()
    payload.marker = str(marker)
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"x": payload}}, evil)
    with pytest.raises(CheckpointError, match=r"refused to load .*evil.ckpt.*weights_only=True"):
        load_age_model(evil)
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError):  # Lightning's loader is safe too, not only load_age_model
        AgeEstimationModel.load_from_checkpoint(evil)
    assert not marker.exists()


def test_missing_or_broken_checkpoints_are_named(tmp_path):
    with pytest.raises(CheckpointError, match=r"no age checkpoint at .*train.py"):
        load_age_model(tmp_path / "nope.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match=r"junk.ckpt"):
        load_age_model(tmp_path / "junk.ckpt")


def test_a_checkpoint_of_another_network_is_named_with_what_did_not_fit(tmp_path):
    foreign = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"head.0.weight": torch.zeros(3, 3)}}, foreign)
    with pytest.raises(CheckpointError, match=r"other.ckpt does not hold this age model's weights \(RuntimeError: "):
        load_age_model(foreign)


class _BackboneSnapshots(L.Callback):
    def __init__(self):
        self.snapshots = []

    def on_train_epoch_end(self, trainer, pl_module):
        self.snapshots.append(pl_module.network.backbone.last_linear.weight.detach().clone())


@pytest.mark.parametrize("freeze_epochs", [1, -1])
def test_backbone_stays_frozen_for_the_configured_epochs(tmp_path, freeze_epochs):
    torch.manual_seed(0)
    model = AgeEstimationModel(pretrained=None, learning_rate=1e-2, freeze_backbone_epochs=freeze_epochs)
    start_backbone = model.network.backbone.last_linear.weight.detach().clone()
    start_bn = model.network.backbone.last_bn.running_mean.clone()
    start_head = model.network.head[1].weight.detach().clone()
    snapshots = _BackboneSnapshots()
    trainer = _tiny_trainer(
        tmp_path, max_epochs=2, limit_train_batches=1, callbacks=[backbone_freezing(freeze_epochs), snapshots]
    )
    trainer.fit(model, _tiny_loader())
    assert torch.equal(snapshots.snapshots[0], start_backbone)  # epoch 0: frozen
    if freeze_epochs == -1:  # never thawed: BatchNorm statistics stay the pretrained ones to the end
        assert torch.equal(model.network.backbone.last_bn.running_mean, start_bn)
    assert not torch.equal(model.network.head[1].weight, start_head)  # the head always learns
    thawed = not torch.equal(snapshots.snapshots[1], start_backbone)
    assert thawed == (freeze_epochs == 1)


def test_no_freezing_callback_for_zero_epochs():
    assert backbone_freezing(0) is None
    assert isinstance(backbone_freezing(3), FreezeBackbone)


def test_model_check_command_reports_device_and_weights(capsys, torch_home_with_vggface2):
    assert model_module.main([]) == 0
    out = capsys.readouterr().out
    assert "Device: cpu, precision 32 (" in out
    assert "weights: found" in out
    assert "ready" in out


def test_model_check_command_explains_missing_weights(capsys, empty_torch_home):
    assert model_module.main(["--pretrained", "vggface2"]) == ExitCode.MODEL
    captured = capsys.readouterr()
    assert "weights: missing" in captured.out
    assert "could not be downloaded" in captured.err
    assert "20180402-114759-vggface2.pt" in captured.err
    assert model_module.main(["--pretrained", "none"]) == 0


# --- checkpoints written before AgeEstimationModel wrapped AgeNetwork --------------------------------


def _pre_network_name(name: str) -> str:
    return name.removeprefix("network.")


def _rewrite_in_pre_network_layout(path: Path) -> dict:
    """Rewrite the checkpoint at `path` as the code before AgeNetwork wrote it: the same keys, save that
    the weights, and the parameters FreezeBackbone records, were named "backbone.*" and "head.*"."""
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["state_dict"] = {_pre_network_name(k): v for k, v in checkpoint["state_dict"].items()}
    for state in checkpoint.get("callbacks", {}).values():
        for groups in state.get("internal_optimizer_metadata", {}).values():
            for group in groups:
                group["params"] = [_pre_network_name(name) for name in group["params"]]
    torch.save(checkpoint, path)
    return checkpoint


@pytest.fixture(scope="module")
def pre_network_checkpoint(tmp_path_factory) -> tuple[AgeEstimationModel, Path]:
    """A model in eval mode and its checkpoint in the layout written before AgeNetwork."""
    torch.manual_seed(0)
    writer = AgeEstimationModel(pretrained=None)
    calibrate_batchnorm(writer)
    path = save_age_checkpoint(writer.eval(), tmp_path_factory.mktemp("pre_network") / "old.ckpt")
    _rewrite_in_pre_network_layout(path)
    return writer, path


def test_pre_network_checkpoint_holds_only_top_level_backbone_and_head(pre_network_checkpoint):
    _, path = pre_network_checkpoint
    names = torch.load(path, weights_only=True)["state_dict"]
    assert {name.split(".")[0] for name in names} == {"backbone", "head"}


def test_pre_network_checkpoint_predicts_the_same_through_load_age_model(pre_network_checkpoint):
    writer, path = pre_network_checkpoint
    faces = random_faces(3)
    expected, loaded = writer.network.predict(faces), load_age_model(path).predict(faces)
    for name in ("age", "age_std", "age_interval"):
        assert torch.allclose(loaded[name], expected[name], atol=1e-5), name


def test_pre_network_checkpoint_predicts_the_same_through_lightning(pre_network_checkpoint):
    writer, path = pre_network_checkpoint
    faces = random_faces(3)
    expected = writer.network.predict(faces)
    with torch.inference_mode():
        loaded = AgeEstimationModel.load_from_checkpoint(path).eval().predict_step(faces, 0)
    for name in ("age", "age_std", "age_interval"):
        assert torch.allclose(loaded[name], expected[name], atol=1e-5), name


def test_backbone_weights_are_found_in_either_checkpoint_layout(pre_network_checkpoint):
    writer, path = pre_network_checkpoint
    old = network_state_dict(torch.load(path, weights_only=True)["state_dict"], "backbone")
    new = network_state_dict(writer.state_dict(), "backbone")
    assert old.keys() == new.keys() == writer.network.backbone.state_dict().keys()


def test_checkpoint_without_head_settings_takes_the_config_defaults(tmp_path):
    path = save_age_checkpoint(AgeEstimationModel(pretrained=None), tmp_path / "age.ckpt")
    checkpoint = torch.load(path, weights_only=True)
    del checkpoint["hyper_parameters"]["head_hidden_dim"], checkpoint["hyper_parameters"]["head_dropout"]
    torch.save(checkpoint, path)
    for network in (load_age_model(path), AgeEstimationModel.load_from_checkpoint(path).network):
        assert network.head[1].out_features == Config().head_hidden_dim
        assert network.head[0].p == Config().head_dropout


class _WeightsAtStart(L.Callback):
    def on_train_start(self, trainer, pl_module):
        self.head_weight = pl_module.network.head[1].weight.detach().clone()


def test_training_resumes_from_a_pre_network_last_checkpoint_with_a_frozen_backbone(tmp_path):
    torch.manual_seed(0)
    first = _tiny_trainer(tmp_path, limit_train_batches=1, callbacks=[backbone_freezing(1)])
    first.fit(AgeEstimationModel(pretrained=None, freeze_backbone_epochs=1), _tiny_loader())
    last = tmp_path / "last.ckpt"
    first.save_checkpoint(last)
    old = _rewrite_in_pre_network_layout(last)

    at_start = _WeightsAtStart()
    resumed = _tiny_trainer(tmp_path, max_epochs=2, limit_train_batches=1, callbacks=[backbone_freezing(1), at_start])
    model = AgeEstimationModel(pretrained=None, freeze_backbone_epochs=1)
    resumed.fit(model, _tiny_loader(), ckpt_path=last)
    assert torch.equal(at_start.head_weight, old["state_dict"]["head.1.weight"])
    assert resumed.global_step == 2  # one step in the first run, one after resuming
    assert all(p.requires_grad for p in model.network.backbone.parameters())  # thawed in epoch 1 as recorded
