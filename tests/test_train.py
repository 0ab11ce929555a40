import contextlib
import io
import itertools
import json
import logging
import os
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import pandas as pd
import processes
import pytest
import torch
from synthetic import make_dataset, train_args
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.hparams import plugin_data_pb2

import train
from config import Config
from face_match_age.exit_codes import ExitCode
from face_match_age.network.age_network import load_age_model

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class ShortFit:
    config: Config
    printed: str
    events: EventAccumulator
    console: str  # what was printed, Lightning's log lines and every warning raised
    warned: list[warnings.WarningMessage]


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def short_fit(tmp_path_factory) -> ShortFit:
    """One two-epoch train.py run, shared by the tests that read what it wrote."""
    config = make_dataset(tmp_path_factory.mktemp("short_fit") / "data", size=80)
    printed, logged = io.StringIO(), _Lines()
    loggers = [logging.getLogger(f"lightning.{part}.utilities.rank_zero") for part in ("pytorch", "fabric")]
    for logger in loggers:
        logger.addHandler(logged)
    try:
        with contextlib.redirect_stdout(printed), warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            assert train.main(train_args(config)) == 0
    finally:
        for logger in loggers:
            logger.removeHandler(logged)
    events = EventAccumulator(str(config.log_dir / "version_0"), size_guidance={"images": 0})
    events.Reload()
    console = "\n".join([printed.getvalue(), *logged.lines, *(str(w.message) for w in warned)])
    return ShortFit(config, printed.getvalue(), events, console, warned)


def test_short_fit_writes_checkpoints_logs_and_config(short_fit):
    config, out, events = short_fit.config, short_fit.printed, short_fit.events
    best, last = config.checkpoint_dir / "best.ckpt", config.checkpoint_dir / "last.ckpt"
    assert best.is_file()
    assert last.is_file()
    assert f"Best checkpoint: {best} (epoch " in out
    assert "validation MAE" in out
    printed_epoch = int(out.split("(epoch ")[1].split(",")[0])
    assert printed_epoch == torch.load(best, map_location="cpu", weights_only=True)["epoch"]
    assert load_age_model(best).hparams["pretrained"] is None  # what infer.py loads by default works
    run_dir = config.log_dir / "version_0"
    assert json.loads((run_dir / "config.json").read_text())["batch_size"] == 4
    assert json.loads((config.checkpoint_dir / "config.json").read_text())["train_dir"] == str(config.train_dir)

    scalars = set(events.Tags()["scalars"])
    assert {
        "train/loss_step",
        "train/loss_epoch",
        "train/mae",
        "train/cs5",
        "val/loss",
        "val/mae",
        "val/cs5",
        "lr-Adam/head",
        "lr-Adam/backbone",
        "hp_metric",
    } <= scalars
    assert events.Scalars("hp_metric")[-1].value == pytest.approx(min(e.value for e in events.Scalars("val/mae")))
    assert {"val/predictions", "val/predicted_vs_true"} <= set(events.Tags()["images"])
    assert len(events.Images("val/predictions")) == 2  # one grid per validation epoch, none for the sanity check
    hparams = events.PluginTagToContent("hparams")
    assert hparams
    assert b"label_sigma" in b"".join(hparams.values())
    assert b"train_dir" in b"".join(hparams.values())


def _custom_scalar_charts(events: EventAccumulator) -> dict[str, list[str]]:
    (written,) = events.Tensors("custom_scalars__config__")  # the tag TensorBoard's Custom Scalars tab reads
    layout = layout_pb2.Layout.FromString(written.tensor_proto.string_val[0])
    return {chart.title: list(chart.multiline.tag) for category in layout.category for chart in category.chart}


def _matching_tags(patterns: list[str], events: EventAccumulator) -> set[str]:
    return {tag for tag in events.Tags()["scalars"] if any(re.search(pattern, tag) for pattern in patterns)}


def test_a_fresh_run_has_a_quiet_console(short_fit):
    assert "`Trainer.fit` stopped" in short_fit.console  # Lightning's lines are captured
    for noise in ("exists and is not empty", "Tip:", "litlogger", "litmodels", "GPU available", "was configured so"):
        assert noise not in short_fit.console, noise
    ours = [
        f"{w.filename}:{w.lineno}: {w.message}"
        for w in short_fit.warned
        if issubclass(w.category, DeprecationWarning | FutureWarning)
        and ".venv" not in w.filename
        and Path(w.filename).resolve().is_relative_to(ROOT)
    ]
    assert ours == []  # no deprecated call of ours


def test_custom_scalars_chart_train_and_validation_mae_together(short_fit):
    charts = _custom_scalar_charts(short_fit.events)
    assert _matching_tags(charts["MAE (years)"], short_fit.events) == {"train/mae", "val/mae", "val/mae_baseline"}


def test_custom_scalars_chart_train_and_validation_epoch_loss_together(short_fit):
    charts = _custom_scalar_charts(short_fit.events)
    assert _matching_tags(charts["loss"], short_fit.events) == {"train/loss_epoch", "val/loss", "val/loss_baseline"}


def test_custom_scalars_show_mae_beside_loss_in_one_category(short_fit):
    (written,) = short_fit.events.Tensors("custom_scalars__config__")
    (category,) = layout_pb2.Layout.FromString(written.tensor_proto.string_val[0]).category
    assert [chart.title for chart in category.chart][:2] == ["MAE (years)", "loss"]


def test_hp_metric_is_only_ever_the_best_validation_mae(short_fit):
    best_so_far = itertools.accumulate((e.value for e in short_fit.events.Scalars("val/mae")), min)
    hp_metric = [e.value for e in short_fit.events.Scalars("hp_metric")]
    assert hp_metric == pytest.approx(list(best_so_far))  # no -1 placeholder before the first validation


def test_hparams_tab_takes_hp_metric_as_the_run_metric(short_fit):
    content = short_fit.events.PluginTagToContent("hparams")["_hparams_/experiment"]
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content).experiment
    assert [metric.name.tag for metric in experiment.metric_infos] == ["hp_metric"]


def test_missing_data_points_to_data_prep(tmp_path, capsys):
    code = train.main(["--train-dir", str(tmp_path / "nope"), "--ckpt-dir", str(tmp_path / "c")])
    assert code == ExitCode.INPUT
    err = capsys.readouterr().err
    assert "data_prep.py" in err
    assert str(tmp_path / "nope") in err
    assert not (tmp_path / "c").exists()


def test_bad_labels_stop_before_training(tmp_path, capsys):
    config = make_dataset(tmp_path / "data", train=4, val=2)
    config.val_csv.write_text("name,age\nval_0000.jpg,130\n")
    assert train.main(train_args(config)) == ExitCode.INPUT
    assert "ages that are not whole numbers in 0..100 (line 2: 130)" in capsys.readouterr().err


def test_tiny_set_is_learned_well_below_the_mean_predictor(tmp_path):
    config = make_dataset(tmp_path / "data", train=32, val=16, size=80).replace(
        max_epochs=10, learning_rate=3e-3, head_learning_rate=3e-3, batch_size=8, patience=50
    )
    result = train.train(config)
    train_ages, val_ages = pd.read_csv(config.train_csv)["age"], pd.read_csv(config.val_csv)["age"]
    mean_predictor_mae = (val_ages - train_ages.mean()).abs().mean()
    assert result.best_val_mae < 0.6 * mean_predictor_mae, (result.best_val_mae, mean_predictor_mae)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


class ScriptedValidationScore(L.Callback):
    """Logs `name` with a given value for each epoch, so that a test decides which epochs improve."""

    def __init__(self, name: str, values: list[float]) -> None:
        self.name, self.values = name, values

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            pl_module.log(self.name, self.values[trainer.current_epoch])


def test_resume_continues_exactly_where_training_stopped(tmp_path, monkeypatch):
    # Epoch 1 scores worse than epoch 0: with Lightning 2.6's save_last, last.ckpt stayed at epoch 0 after it.
    monkeypatch.setattr(train, "MONITOR", "val/scripted")
    scores = ScriptedValidationScore("val/scripted", [1.0, 2.0, 0.5])
    base = make_dataset(tmp_path / "data", train=8, val=4, size=80)  # 2 steps an epoch
    straight = base.replace(checkpoint_dir=tmp_path / "straight", log_dir=tmp_path / "logs_a" / "run", max_epochs=3)
    train.train(straight, (scores,))

    interrupted = base.replace(checkpoint_dir=tmp_path / "split", log_dir=tmp_path / "logs_b" / "run")
    train.train(interrupted.replace(max_epochs=2), (scores,))
    first_part = torch.load(interrupted.checkpoint_dir / "last.ckpt", weights_only=True)
    assert torch.load(interrupted.checkpoint_dir / "best.ckpt", weights_only=True)["epoch"] == 0
    assert first_part["epoch"] == 1  # the epoch that did not improve
    assert first_part["global_step"] == 2 * 2
    train.train(
        interrupted.replace(max_epochs=3, resume_checkpoint=interrupted.checkpoint_dir / "last.ckpt"), (scores,)
    )

    resumed = torch.load(interrupted.checkpoint_dir / "last.ckpt", weights_only=True)
    assert resumed["epoch"] == 2  # epoch 1 was not run again
    assert resumed["global_step"] == 3 * 2
    assert torch.load(interrupted.checkpoint_dir / "best.ckpt", weights_only=True)["epoch"] == 2
    assert resumed["optimizer_states"][0]["state"]  # Adam moments travelled too
    expected = _weights(straight.checkpoint_dir / "last.ckpt")
    for name, tensor in resumed["state_dict"].items():
        assert torch.allclose(tensor.float(), expected[name].float(), atol=1e-5), name


@pytest.mark.slow  # DDP: two training processes
def test_ddp_with_two_cpu_processes_shards_the_data(tmp_path):
    config = make_dataset(tmp_path / "data", train=16, val=4, size=80)
    out_dir = tmp_path / "seen"
    out_dir.mkdir()
    args = train_args(config, devices=2, strategy="ddp", max_epochs=1)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
        "MASTER_PORT": "29517",
        "PL_TORCH_DISTRIBUTED_BACKEND": "gloo",
    }
    result = processes.run(
        [sys.executable, str(ROOT / "tests" / "ddp_probe.py"), str(out_dir), *args],
        "two DDP processes to train an epoch",
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((out_dir / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert all(record["world_size"] == 2 for record in ranks)
    seen = [set(record["seen"]["0"]) for record in ranks]
    assert seen[0]
    assert seen[1]
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == set(range(16))
    assert sorted(p.name for p in config.checkpoint_dir.glob("*.ckpt")) == ["best.ckpt", "last.ckpt"]
    assert "Best checkpoint" in result.stdout
    assert result.stdout.count("Best checkpoint") == 1
