"""Checkpoints survive what ends real runs: kill -9, SIGTERM from a scheduler, Ctrl-C, a crash while saving,
an unreadable image; and a damaged checkpoint is reported as such by train.py, infer.py and evaluate.py."""

import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import processes
import pytest
import torch
from synthetic import make_dataset, train_args

import evaluate
import infer
import train
from config import Config
from face_match_age.device import choose_device
from face_match_age.exit_codes import ExitCode
from face_match_age.files.checkpoint_files import checkpoint_damage
from face_match_age.files.output_files import OutputError
from face_match_age.training.checkpointing import AtomicCheckpointIO

ROOT = Path(__file__).resolve().parents[1]


def _checkpoint_position(path: Path) -> tuple[int, int]:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    return checkpoint["epoch"], checkpoint["global_step"]


def _start_probe(tmp_path: Path, hold_at_step: int, args: list[str]) -> tuple[subprocess.Popen, Path]:
    """train.py's main in a subprocess, held before global step `hold_at_step` + 1 (see train_probe.py)."""
    ready = tmp_path / "probe_ready"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    # Output into files, not pipes: a full pipe would block the progress bar and the run with it.
    with open(tmp_path / "probe_out.txt", "w") as out, open(tmp_path / "probe_err.txt", "w") as err:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "train_probe.py"), str(ready), str(hold_at_step), *args],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=err,
        )
    stderr = (tmp_path / "probe_err.txt").read_text
    processes.wait_until(ready.exists, process, f"train.py to reach step {hold_at_step}", output=stderr)
    return process, tmp_path / "probe_err.txt"


class StepsRun(L.Callback):
    """Which (epoch, global step) each training batch of a run started at."""

    def __init__(self) -> None:
        self.started: list[tuple[int, int]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.started.append((trainer.current_epoch, trainer.global_step))


@pytest.mark.slow  # train.py in a process of its own
def test_kill_9_mid_epoch_then_resume_ends_like_an_uninterrupted_run(tmp_path):
    # 12 faces in batches of 4: 3 steps an epoch, 2 epochs. last.ckpt is written at steps 2 (in epoch 0),
    # 3 (end of epoch 0), 4 (in epoch 1) and 6 (end of epoch 1).
    base = make_dataset(tmp_path / "data", train=12, val=4, size=80).replace(checkpoint_every_n_steps=2)
    killed = base.replace(checkpoint_dir=tmp_path / "killed", log_dir=tmp_path / "logs_killed" / "run")
    process, _ = _start_probe(tmp_path, 5, train_args(killed, checkpoint_every_n_steps=2))
    process.send_signal(signal.SIGKILL)
    processes.wait(process, "train.py to end after SIGKILL")
    last = killed.checkpoint_dir / "last.ckpt"
    assert _checkpoint_position(last) == (1, 4)  # the in-epoch save, not the end of epoch 0

    resumed_steps = StepsRun()
    train.train(killed.replace(resume_checkpoint=last), (resumed_steps,))
    assert resumed_steps.started == [(1, 4), (1, 5)]  # epoch 0 is not repeated; only steps 5 and 6 are run

    straight = base.replace(checkpoint_dir=tmp_path / "straight", log_dir=tmp_path / "logs_straight" / "run")
    train.train(straight)
    assert _checkpoint_position(last) == _checkpoint_position(straight.checkpoint_dir / "last.ckpt") == (1, 6)


@pytest.mark.slow  # train.py in a process of its own
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_save_a_checkpoint_and_print_how_to_resume(tmp_path, signum):
    config = make_dataset(tmp_path / "data", train=12, val=4, size=80)
    args = train_args(config, checkpoint_every_n_steps=0)  # so that only the stop can have saved at step 2
    process, err_file = _start_probe(tmp_path, 1, args)
    process.send_signal(signum)
    assert processes.wait(process, f"train.py to save and end after {signum.name}") == 128 + signum
    err = err_file.read_text()
    assert "Traceback" not in err
    last = config.checkpoint_dir / "last.ckpt"
    stop_lines = [line for line in err.splitlines() if line.startswith("stopped by")]
    assert stop_lines == [
        (
            f"stopped by {signum.name} in epoch 0 at step 2; saved {last}; resume with: "
            f"uv run python train.py {shlex.join(args)} --resume {last}"
        )
    ], err[-3000:]
    assert _checkpoint_position(last) == (0, 2)  # the batch running when the signal came was finished first


def test_resume_command_replaces_the_old_checkpoint_option():
    command = train.resume_command(
        ["--resume", "old.ckpt", "--train-dir", "my faces", "--resume-checkpoint=x"], Path("c/last.ckpt")
    )
    assert command == "uv run python train.py --train-dir 'my faces' --resume c/last.ckpt"


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), RuntimeError("killed mid-save")])
def test_a_save_that_fails_midway_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch, error):
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"epoch": 0, "weights": torch.ones(4)}, path)
    before = path.read_bytes()

    def save_half_then_fail(checkpoint, file, *args, **kwargs):
        file.write(before[: len(before) // 2])
        raise error

    monkeypatch.setattr(torch, "save", save_half_then_fail)
    with pytest.raises((OutputError, type(error))):
        AtomicCheckpointIO().save_checkpoint({"epoch": 1, "weights": torch.zeros(4)}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left behind


def test_training_writes_checkpoints_through_the_atomic_writer(tmp_path):
    config = Config(device="cpu", pretrained="none", checkpoint_dir=tmp_path / "c", log_dir=tmp_path / "l" / "r")
    trainer = train.build_trainer(config, choose_device("cpu", "auto"))[0]
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


@pytest.fixture
def truncated_checkpoint(age_checkpoint, tmp_path) -> Path:
    """A real age checkpoint cut to half its size, as a crash during a non-atomic save leaves it."""
    path = tmp_path / "broken" / "best.ckpt"
    path.parent.mkdir()
    data = age_checkpoint.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _assert_one_damaged_line(err: str, path: Path) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert "damaged" in lines[0], lines[0]
    assert str(path) in lines[0], lines[0]
    assert "Traceback" not in err
    assert "weights_only=False" not in err
    assert "could run code" not in err


def test_train_reports_a_truncated_checkpoint_before_fitting(tmp_path, truncated_checkpoint, capsys):
    config = make_dataset(tmp_path / "data", train=4, val=2, size=80)
    assert train.main(train_args(config) + ["--resume", str(truncated_checkpoint)]) == ExitCode.MODEL
    _assert_one_damaged_line(capsys.readouterr().err, truncated_checkpoint)
    assert not config.checkpoint_dir.exists()  # stopped before Lightning set anything up


def test_train_reports_a_corrupt_byte_that_torch_load_would_accept(tmp_path, age_checkpoint, capsys):
    config = make_dataset(tmp_path / "data", train=4, val=2, size=80)
    corrupt = tmp_path / "flipped.ckpt"
    data = bytearray(age_checkpoint.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the weights: torch.load reads it without complaint
    corrupt.write_bytes(bytes(data))
    torch.load(corrupt, weights_only=True)
    assert checkpoint_damage(age_checkpoint) is None
    assert train.main(train_args(config) + ["--resume", str(corrupt)]) == ExitCode.MODEL
    _assert_one_damaged_line(capsys.readouterr().err, corrupt)


def test_infer_reports_a_truncated_checkpoint_as_damaged(
    torch_home_with_vggface2, photo_dir, truncated_checkpoint, tmp_path, capsys
):
    code = infer.main(
        [
            str(photo_dir / "astronaut.jpg"),
            str(photo_dir / "astronaut_edit.jpg"),
            str(tmp_path / "out"),
            "--ckpt",
            str(truncated_checkpoint),
        ]
    )
    assert code == infer.EXIT_MODEL
    _assert_one_damaged_line(capsys.readouterr().err, truncated_checkpoint)


def test_evaluate_reports_a_truncated_checkpoint_as_damaged(tmp_path, truncated_checkpoint, capsys):
    assert _evaluate_age(tmp_path, truncated_checkpoint) == ExitCode.MODEL
    _assert_one_damaged_line(capsys.readouterr().err, truncated_checkpoint)


def test_empty_checkpoint_file_is_reported_as_damaged(tmp_path, capsys):
    empty = tmp_path / "best.ckpt"
    empty.write_bytes(b"")
    assert _evaluate_age(tmp_path, empty) == ExitCode.MODEL
    _assert_one_damaged_line(capsys.readouterr().err, empty)


def _evaluate_age(tmp_path: Path, checkpoint: Path) -> int:
    """evaluate.py age on a tiny labelled set with `checkpoint`; its exit code."""
    config = make_dataset(tmp_path / "data", train=1, val=2, size=80)
    images, labels = str(config.val_dir), str(config.val_csv)
    out = str(tmp_path / "eval")
    return evaluate.main(["age", "--images", images, "--csv", labels, "--ckpt", str(checkpoint), "--out", out])


@pytest.mark.parametrize("workers", [0, 2])
def test_unreadable_training_image_stops_training_with_one_line(tmp_path, capsys, workers):
    config = make_dataset(tmp_path / "data", train=4, val=2, size=80).replace(num_workers=workers)
    broken = config.train_dir / "train_0002.jpg"
    broken.write_bytes(broken.read_bytes()[:300])  # a JPEG cut short, as an interrupted copy leaves it
    assert train.main(train_args(config)) == ExitCode.INPUT
    err = capsys.readouterr().err
    assert "Traceback" not in err
    error_lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1, err[-3000:]
    line = error_lines[0]
    assert f"cannot read image {broken}" in line, line
    assert f"line 4 of {config.train_csv}" in line, line
    assert "remove its row from the CSV, then run again" in line


def test_a_broken_verify_weights_file_named_by_the_user_gets_no_download_advice(
    age_checkpoint, photo_dir, tmp_path, empty_torch_home, capsys
):
    from fake_networks import write_facenet_weights

    named = tmp_path / "mine.pt"
    write_facenet_weights(named, 8631)
    named.write_bytes(named.read_bytes()[:1000])
    code = infer.main(
        [
            str(photo_dir / "astronaut.jpg"),
            str(photo_dir / "astronaut_edit.jpg"),
            str(tmp_path / "out"),
            "--ckpt",
            str(age_checkpoint),
            "--verify-weights",
            str(named),
        ]
    )
    assert code == infer.EXIT_MODEL
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert str(named) in lines[0], err
    assert f"weights file {named} is damaged: it is truncated or corrupt" in lines[0], err
    assert "Delete it" not in err
    assert "to download" not in err
    assert "Traceback" not in err
