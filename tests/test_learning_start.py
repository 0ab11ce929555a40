"""Training that shows from its first step whether it learns: the head starts at the training age
distribution, every MAE comes with the baseline of guessing the median age, and the head and the backbone
learn at their own rates."""

import contextlib
import io
import json
from dataclasses import dataclass

import lightning as L
import pandas as pd
import pytest
import torch
from fake_networks import random_faces
from synthetic import make_dataset, train_args
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2

import evaluate
import train
from callbacks import FreezeBackbone
from config import Config
from face_match_age.evaluation.array_metrics import median_age_guess
from face_match_age.network.age_network import age_prior_logits, expected_age
from model import (
    AgeEstimationModel,
    learning_rate_factor,
    save_age_checkpoint,
    split_single_group,
)

TRAIN_AGES = [3, 20, 22, 25, 25, 30, 31, 60]


def test_median_guess_by_hand():
    guess = median_age_guess([10, 20, 30, 90], [20, 25, 40])  # median 25; errors 5, 0, 15
    assert guess == {"median_age": 25.0, "mae": pytest.approx(20 / 3), "cs5": pytest.approx(2 / 3)}


def test_an_untrained_model_predicts_the_training_age_distribution_not_age_50():
    torch.manual_seed(0)
    model = AgeEstimationModel(pretrained=None)
    model.start_at_prior(TRAIN_AGES)
    prior = age_prior_logits(TRAIN_AGES, model.hparams.label_sigma)
    with torch.no_grad():
        logits = model.train()(random_faces(3)[:, :, :80, :80])  # train mode: dropout and BatchNorm at work
    assert torch.allclose(logits, prior.expand(3, -1), atol=1e-5)
    mean_age = sum(TRAIN_AGES) / len(TRAIN_AGES)
    assert expected_age(logits).tolist() == pytest.approx([mean_age] * 3, abs=0.5)  # 27, not 50


def test_the_prior_is_the_mean_label_distribution():
    # log of the average of the training targets: the loss of predicting it is the least any constant can have
    prior = age_prior_logits([10, 10, 70], sigma=2.0).exp()
    assert float(prior.sum()) == pytest.approx(1.0, abs=1e-5)
    assert float(prior[10]) == pytest.approx(2 * float(prior[70]), rel=1e-4)
    assert int(prior.argmax()) == 10


def test_head_and_backbone_learn_at_their_own_rates():
    model = AgeEstimationModel(pretrained=None, learning_rate=1e-4, head_learning_rate=3e-3)
    groups = {group["name"]: group for group in model.configure_optimizers().param_groups}
    assert groups["head"]["lr"] == 3e-3 and groups["backbone"]["lr"] == 1e-4
    assert {id(p) for p in groups["head"]["params"]} == {id(p) for p in model.network.head.parameters()}
    # A backbone that thaws later joins at its own rate, not the head's.
    frozen = AgeEstimationModel(pretrained=None, learning_rate=1e-4, head_learning_rate=3e-3)
    freezing = FreezeBackbone(1)
    freezing.freeze_before_training(frozen)
    optimizer = frozen.configure_optimizers()
    assert [group["name"] for group in optimizer.param_groups] == ["head"]
    freezing.finetune_function(frozen, 1, optimizer)
    assert (optimizer.param_groups[-1]["name"], optimizer.param_groups[-1]["lr"]) == ("backbone", 1e-4)


def test_warm_up_then_cosine():
    assert [learning_rate_factor(step, 4, 104, "cosine") for step in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert learning_rate_factor(54, 4, 104, "cosine") == pytest.approx(0.5)
    assert learning_rate_factor(104, 4, 104, "cosine") == pytest.approx(0.0)
    assert learning_rate_factor(80, 0, 104, "constant") == 1.0


class HeadAtStart(L.Callback):
    """The head's last bias when training starts, after any checkpoint was restored."""

    bias: torch.Tensor | None = None

    def on_train_start(self, trainer, pl_module):
        self.bias = pl_module.network.head[-1].bias.detach().clone()


@dataclass(frozen=True)
class Fit:
    config: Config
    printed: str
    head_at_start: torch.Tensor


@pytest.fixture(scope="module")
def fresh_fit(tmp_path_factory) -> Fit:
    config = make_dataset(tmp_path_factory.mktemp("learning_start") / "data", train=8, val=4, size=80)
    head, printed = HeadAtStart(), io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert train.main(train_args(config, max_epochs=1), extra_callbacks=(head,)) == 0
    return Fit(config, printed.getvalue(), head.bias)


def _ages(csv_path) -> list[int]:
    return pd.read_csv(csv_path)["age"].tolist()


def test_a_fresh_run_starts_at_the_prior_and_a_resumed_run_keeps_its_trained_head(fresh_fit):
    config = fresh_fit.config
    expected = age_prior_logits(_ages(config.train_csv), config.label_sigma)
    assert torch.allclose(fresh_fit.head_at_start, expected, atol=1e-6)
    last = config.checkpoint_dir / "last.ckpt"
    trained = torch.load(last, weights_only=True)["state_dict"]["network.head.4.bias"]
    assert not torch.allclose(trained, expected, atol=1e-6)  # one epoch moved it
    # Resumed from a checkpoint in the layout written before the head had its own rate: one optimizer group.
    old_layout = config.checkpoint_dir.parent / "one_group.ckpt"
    torch.save(_with_one_optimizer_group(torch.load(last, weights_only=True)), old_layout)
    resumed = HeadAtStart()
    with contextlib.redirect_stdout(io.StringIO()):
        args = train_args(config, max_epochs=2, resume=old_layout)
        assert train.main(args, extra_callbacks=(resumed,)) == 0
    assert torch.equal(resumed.bias, trained)


def _with_one_optimizer_group(checkpoint: dict) -> dict:
    (state,) = checkpoint["optimizer_states"]
    head, backbone = state["param_groups"]
    order = backbone["params"] + head["params"]  # the old single group: AgeNetwork's order, backbone first
    state["state"] = {order.index(i): value for i, value in state["state"].items()}
    settings = {key: value for key, value in head.items() if key not in ("params", "name")}
    state["param_groups"] = [{**settings, "params": list(range(len(order)))}]
    return checkpoint


def test_a_one_group_optimizer_state_splits_back_into_head_and_backbone():
    state = {
        "state": {0: "h0", 1: "h1", 2: "b0", 3: "b1", 4: "b2"},
        "param_groups": [
            {"name": "head", "lr": 1e-3, "params": [0, 1]},
            {"name": "backbone", "lr": 1e-4, "params": [2, 3, 4]},
        ],
    }
    (one,) = _with_one_optimizer_group({"optimizer_states": [state]})["optimizer_states"]
    assert one["state"] == {0: "b0", 1: "b1", 2: "b2", 3: "h0", 4: "h1"}
    split_single_group(one, head_count=2)
    assert one["state"] == {0: "h0", 1: "h1", 2: "b0", 3: "b1", 4: "b2"}
    assert [(g["name"], g["params"], g["lr"]) for g in one["param_groups"]] == [
        ("head", [0, 1], 1e-3),
        ("backbone", [2, 3, 4], 1e-3),  # the old group's rate: the run goes on as it was
    ]


def test_train_prints_and_logs_the_median_baseline_beside_the_mae(fresh_fit):
    config, printed = fresh_fit.config, fresh_fit.printed
    baseline = median_age_guess(_ages(config.train_csv), _ages(config.val_csv))
    assert f"predicting the training median age ({baseline['median_age']:g})" in printed.split("Epoch")[0]
    assert f"; predicting the median age: {baseline['mae']:.2f})" in printed
    events = EventAccumulator(str(config.log_dir / "version_0"))
    events.Reload()
    assert [e.value for e in events.Scalars("val/mae_baseline")] == [pytest.approx(baseline["mae"])]
    assert {"val/cs5_baseline", "val/loss_baseline"} <= set(events.Tags()["scalars"])
    (written,) = events.Tensors("custom_scalars__config__")
    layout = layout_pb2.Layout.FromString(written.tensor_proto.string_val[0])
    charts = {chart.title: list(chart.multiline.tag) for category in layout.category for chart in category.chart}
    assert "^val/mae_baseline$" in charts["MAE (years)"]


def test_evaluate_age_reports_the_baseline_and_where_its_median_comes_from(tmp_path, capsys):
    config = make_dataset(tmp_path / "data", train=5, val=3, size=80)
    checkpoint = save_age_checkpoint(AgeEstimationModel(pretrained=None).eval(), tmp_path / "age.ckpt")
    common = ["age", "--images", str(config.val_dir), "--csv", str(config.val_csv), "--ckpt", str(checkpoint)]
    assert evaluate.main([*common, "--train-csv", str(config.train_csv), "--out", str(tmp_path / "a")]) == 0
    given = json.loads((tmp_path / "a" / "summary.json").read_text())["baseline"]
    assert given["mae"] == pytest.approx(median_age_guess(_ages(config.train_csv), _ages(config.val_csv))["mae"], 1e-3)
    assert str(config.train_csv) in given["what"]
    printed = capsys.readouterr().out  # the table: the model's MAE beside the median's, and whose median
    assert f"median age {given['median_age']:g}" in printed and f"baseline: {given['what']}" in printed
    assert evaluate.main([*common, "--out", str(tmp_path / "b")]) == 0
    own = json.loads((tmp_path / "b" / "summary.json").read_text())["baseline"]
    assert own["median_age"] == median_age_guess(_ages(config.val_csv), [])["median_age"]
    assert "evaluated set itself" in own["what"]
