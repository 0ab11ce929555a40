"""Failures a user can cause end in one line, never a traceback, with the script's documented exit code:
a device this machine lacks, a device out of memory, a full disk, a --ckpt that train.py cannot resume or that
was trained with other settings; and the Python API refuses what it cannot use with a message saying what it
accepts. Scripts run in-process (main(argv)); a failure is injected at its narrowest seam."""

from __future__ import annotations

import csv
import errno
import json
import queue
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from dataset_archives import face_photo
from facenet_pytorch import InceptionResnetV1
from synthetic import make_dataset, train_args

import data_prep
import evaluate
import infer
import loader
import model
import train
from config import Config
from face_match_age import sharding
from face_match_age.exit_codes import ExitCode
from face_match_age.inference import batch, sharded_analysis
from face_match_age.inference.analyzer import FaceAnalyzer
from face_match_age.network.weights import weights_path
from face_match_age.preparation import crops


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Config:
    """A tiny training set (80x80 crops: InceptionResnetV1's smallest) shared by the train.py tests; each
    writes to its own folders."""
    return make_dataset(tmp_path_factory.mktemp("user_failures") / "data", train=8, val=4, size=80)


def _own_folders(config: Config, tmp_path: Path) -> Config:
    return config.replace(checkpoint_dir=tmp_path / "checkpoints", log_dir=tmp_path / "logs" / "run")


def _error_lines(err: str) -> list[str]:
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if line.startswith("error:")]


def _no_gpu(monkeypatch) -> None:
    # The same on a machine with a GPU: what is under test is the answer to a device that is not there.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


# --- a device this machine lacks -------------------------------------------------------------------


NO_CUDA_DEVICE = "error: device 'cuda' was requested but this machine has no such CUDA GPU; use --device auto or cpu"


@pytest.mark.parametrize(
    "script",
    [
        "train",
        "infer",
        "infer --pairs",
        "infer age",
        "evaluate age",
        "evaluate verify",
        "evaluate retrieve",
        "model.py's check",
        "data_prep",
    ],
)
def test_a_device_this_machine_lacks_is_one_line_and_exit_2_in_every_script(
    script, dataset, tmp_path, monkeypatch, capsys
):
    # One option (--device), one message, one exit code (ExitCode.USAGE) in every script.
    _no_gpu(monkeypatch)
    out = str(tmp_path / "out")
    # the inputs named exist: a missing one is answered first, before torch is imported (test_startup.py)
    monkeypatch.chdir(tmp_path)
    for name in ("a.jpg", "b.jpg", "p.csv", "c.csv", "data/IMDB/val.csv"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    (tmp_path / "l.csv").write_text("name,age\na.jpg,30\n")
    runs = {
        "train": lambda: train.main(train_args(_own_folders(dataset, tmp_path), device="cuda")),
        "infer": lambda: infer.main(["a.jpg", "b.jpg", out, "--device", "cuda"]),
        "infer --pairs": lambda: infer.main(["--pairs", "p.csv", out, "--device", "cuda"]),
        "infer age": lambda: infer.main(["age", "a.jpg", out, "--device", "cuda", "--ckpt", "best.ckpt"]),
        "evaluate age": lambda: evaluate.main(["age", "--ckpt", "best.ckpt", "--out", out, "--device", "cuda"]),
        "evaluate verify": lambda: evaluate.main(["verify", "--pairs", "p.csv", "--out", out, "--device", "cuda"]),
        "model.py's check": lambda: model.main(["--device", "cuda", "--pretrained", "none"]),
        "evaluate retrieve": lambda: evaluate.main(
            ["retrieve", "--csv", "c.csv", "--images", ".", "--out", out, "--device", "cuda"]
        ),
        "data_prep": lambda: data_prep.main(
            ["--dataset", "csv", "--images", ".", "--csv", "l.csv", "--out", out, "--workers", "1", "--device", "cuda"]
        ),
    }
    assert runs[script]() == ExitCode.USAGE
    err = capsys.readouterr().err
    assert _error_lines(err) == [NO_CUDA_DEVICE]
    assert "usage:" not in err


def test_gpu_indices_on_a_machine_without_gpus_are_one_line(dataset, tmp_path, monkeypatch, capsys):
    _no_gpu(monkeypatch)
    assert train.main(train_args(_own_folders(dataset, tmp_path), device="auto", devices="0,1")) == ExitCode.USAGE
    assert _error_lines(capsys.readouterr().err) == [
        (
            "error: cannot set up training on cpu: `devices` selected with `CPUAccelerator` should be an int > 0; "
            "check --device, --devices, --num-nodes, --strategy and --precision"
        )
    ]


# --- out of memory on the device -------------------------------------------------------------------


def _forward_out_of_memory(monkeypatch) -> None:
    """Every InceptionResnetV1 forward (the backbone of both networks) runs out of device memory, as a
    batch too large for a GPU does."""

    def forward(self, x):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB\nmore allocator advice")

    monkeypatch.setattr(InceptionResnetV1, "forward", forward)


def test_out_of_memory_while_training_names_the_batch_size(dataset, tmp_path, monkeypatch, capsys):
    _forward_out_of_memory(monkeypatch)
    assert train.main(train_args(_own_folders(dataset, tmp_path))) == ExitCode.OUT_OF_MEMORY
    assert _error_lines(capsys.readouterr().err) == [
        (
            "error: out of memory on the device while training (OutOfMemoryError: CUDA out of memory. Tried to "
            "allocate 20.00 GiB); lower --batch-size (now 4)"
        )
    ]


def test_out_of_memory_while_inferring_names_the_inference_batch_size(
    photo_dir, torch_home_with_vggface2, tmp_path, monkeypatch, capsys
):
    _forward_out_of_memory(monkeypatch)
    photos = [str(photo_dir / "astronaut.jpg"), str(photo_dir / "astronaut_edit.jpg")]
    argv = [*photos, str(tmp_path / "out"), "--no-age", "--inference-batch-size", "8"]
    assert infer.main(argv) == ExitCode.OUT_OF_MEMORY
    assert _error_lines(capsys.readouterr().err) == [
        (
            "error: out of memory on the device while running the networks (OutOfMemoryError: CUDA out of memory. "
            "Tried to allocate 20.00 GiB); lower --inference-batch-size (now 8)"
        )
    ]


def test_out_of_memory_while_evaluating_ages_names_the_inference_batch_size(
    dataset, age_checkpoint, tmp_path, monkeypatch, capsys
):
    _forward_out_of_memory(monkeypatch)
    argv = ["age", "--images", str(dataset.val_dir), "--csv", str(dataset.val_csv), "--ckpt", str(age_checkpoint)]
    assert (
        evaluate.main([*argv, "--out", str(tmp_path / "eval"), "--inference-batch-size", "2"]) == ExitCode.OUT_OF_MEMORY
    )
    assert _error_lines(capsys.readouterr().err) == [
        (
            "error: out of memory on the device while running the networks (OutOfMemoryError: CUDA out of memory. "
            "Tried to allocate 20.00 GiB); lower --inference-batch-size (now 2)"
        )
    ]


def test_out_of_memory_while_preparing_a_dataset_is_one_line(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    for number in range(4):
        face_photo(number).save(folder / f"p{number}.jpg")
    pd.DataFrame({"name": [f"p{n}.jpg" for n in range(4)], "age": [20, 30, 40, 50]}).to_csv(tmp_path / "l.csv")

    def detect_out_of_memory(detector, images, config):  # MTCNN's batch, as on a GPU too small for it
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(crops, "detect_faces_batch", detect_out_of_memory)
    argv = ["--dataset", "csv", "--images", str(folder), "--csv", str(tmp_path / "l.csv"), "--workers", "1"]
    assert data_prep.main([*argv, "--out", str(tmp_path / "prepared")]) == ExitCode.OUT_OF_MEMORY
    assert _error_lines(capsys.readouterr().err) == [
        (
            "error: out of memory on the device while detecting faces (OutOfMemoryError: CUDA out of memory. Tried to "
            "allocate 20.00 GiB); free the GPU, or detect on the CPU with --workers 2"
        )
    ]


def test_out_of_memory_in_a_batch_worker_reaches_the_parent_as_itself(monkeypatch):
    # Run in this process: what is under test is what the worker sends, not the spawning.
    class OutOfMemoryAnalyzer:
        def analyze_many(self, photos, **options):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
            yield

    # A helper's start (ignore stop signals, die with the parent) is for the worker process, not this one.
    monkeypatch.setattr(sharding, "start_helper_process", lambda: None)
    monkeypatch.setattr(torch, "set_num_threads", lambda threads: None)
    # What analyses_sharded gives each of its worker processes, called here with the worker's own arguments.
    captured = {}
    monkeypatch.setattr(sharded_analysis, "sharded", lambda *args: captured.setdefault("args", args))
    sharded_analysis.analyses_sharded(1, "cpu", False, lambda device: OutOfMemoryAnalyzer(), [Path("a.jpg")])
    world, work, photos, passed_on, _ = captured["args"]
    sent = queue.Queue()
    sharding._worker(0, world, work, photos, passed_on, sent)
    kind, error = sent.get_nowait()
    assert kind == "error" and isinstance(error, torch.OutOfMemoryError)  # sharded() raises it in the parent
    assert sent.empty()


# --- a full disk -------------------------------------------------------------------------------------


class _FillingFile:
    """A text file on a disk that fills up at its `full_at`-th write: half of that write reaches the file,
    then ENOSPC, as the kernel reports a short write on a full disk."""

    def __init__(self, file, full_at: int) -> None:
        self.file, self.writes_left = file, full_at

    def write(self, text: str) -> int:
        self.writes_left -= 1
        if self.writes_left == 0:
            self.file.write(text[: len(text) // 2])
            self.file.flush()
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.file.write(text)

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()


@pytest.fixture
def three_pairs(photo_dir, tmp_path) -> Path:
    """A pairs CSV of three pairs of two photos, each holding a face: the rows come out back to back."""
    for name in ("astronaut.jpg", "astronaut_edit.jpg"):
        shutil.copy(photo_dir / name, tmp_path / name)
    pairs = tmp_path / "pairs.csv"
    rows = ["astronaut.jpg,astronaut_edit.jpg", "astronaut_edit.jpg,astronaut.jpg", "astronaut.jpg,astronaut.jpg"]
    pairs.write_text("img1,img2\n" + "\n".join(rows) + "\n")
    return pairs


def _rows(out: Path) -> tuple[list[dict], list[dict]]:
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    with open(out / "results.csv", newline="") as handle:
        return lines, list(csv.DictReader(handle))


def test_a_full_disk_during_a_batch_keeps_whole_rows_and_exits_5(
    three_pairs, torch_home_with_vggface2, tmp_path, monkeypatch, capsys
):
    real_open = open

    def open_on_a_filling_disk(path, mode="r", *args, **kwargs):
        file = real_open(path, mode, *args, **kwargs)
        return _FillingFile(file, full_at=2) if Path(path).name == "results.csv" and "a" in mode else file

    out = tmp_path / "out"
    command = ["--pairs", str(three_pairs), str(out), "--no-age"]
    with monkeypatch.context() as patch:
        patch.setattr(batch, "open", open_on_a_filling_disk, raising=False)  # the batch's appending writer
        assert infer.main(command) == infer.EXIT_OUTPUT
    assert _error_lines(capsys.readouterr().err) == [
        (
            f"error: disk full writing the results in {out}; 1 whole row is kept: free space and run the same "
            "command to resume, or choose another OUT_DIR"
        )
    ]
    rows, table = _rows(out)  # the second row, cut in results.csv mid-line, is gone from both files
    assert len(rows) == len(table) == 1
    assert (out / "results.csv").read_text().endswith("\n")
    assert [(r["file_1"], r["file_2"]) for r in table] == [(r["file_1"], r["file_2"]) for r in rows]

    assert infer.main(command) == infer.EXIT_OK  # space freed: the same command resumes and finishes
    rows, table = _rows(out)
    assert [r["pair_index"] for r in rows] == [0, 1, 2]
    assert len(table) == 3


def test_a_full_disk_while_train_saves_keeps_the_previous_last_ckpt(dataset, tmp_path, monkeypatch, capsys):
    config = _own_folders(dataset, tmp_path)
    last = config.checkpoint_dir / "last.ckpt"
    real_save = torch.save

    def save_on_a_filling_disk(checkpoint, file, *args, **kwargs):
        if Path(getattr(file, "name", "")).name == ".last.ckpt.tmp" and last.exists():  # last.ckpt's second save
            file.write(b"PK\x03\x04 half a checkpoint")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(checkpoint, file, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_on_a_filling_disk)
    # last.ckpt is saved after step 1, then at the epoch's end (step 2): the disk is full by then.
    argv = train_args(config, max_epochs=1, limit_train_batches=2, limit_val_batches=1, checkpoint_every_n_steps=1)
    argv += ["--freeze-backbone-epochs", "-1"]  # no optimizer state for the backbone: smaller, quicker saves
    assert train.main(argv) == ExitCode.OUTPUT
    assert _error_lines(capsys.readouterr().err) == [
        f"error: disk full writing {last}; free space or choose another --ckpt-dir; then resume with --resume {last}"
    ]
    assert torch.load(last, weights_only=True)["global_step"] == 1  # the save before, whole
    assert sorted(p.name for p in config.checkpoint_dir.iterdir() if p.name.startswith(".")) == []


def test_a_full_disk_while_evaluate_writes_names_the_file_and_keeps_nothing_half_written(
    dataset, age_checkpoint, tmp_path, monkeypatch, capsys
):
    def to_csv_on_a_full_disk(self, path, *args, **kwargs):
        Path(path).write_text("name,age,predi")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", to_csv_on_a_full_disk)  # predictions.csv's writer
    out = tmp_path / "eval"
    argv = ["age", "--images", str(dataset.val_dir), "--csv", str(dataset.val_csv), "--ckpt", str(age_checkpoint)]
    assert evaluate.main([*argv, "--out", str(out)]) == ExitCode.OUTPUT
    assert _error_lines(capsys.readouterr().err) == [
        f"error: disk full writing {out / 'predictions.csv'}; free space or choose another --out"
    ]
    assert list(out.iterdir()) == []


# --- a --resume that train.py cannot resume ------------------------------------------------------------


@pytest.mark.parametrize("zipped", [True, False], ids=["zip format", "torch's older format"])
def test_train_refuses_the_vggface2_weights_as_a_ckpt(dataset, torch_home_with_vggface2, zipped, tmp_path, capsys):
    vggface2 = weights_path("vggface2")
    if not zipped:  # as torch before 1.6 saved files: checkpoint_damage cannot read it, torch.load can
        vggface2 = tmp_path / vggface2.name
        torch.save(torch_home_with_vggface2, vggface2, _use_new_zipfile_serialization=False)
    assert train.main(train_args(_own_folders(dataset, tmp_path)) + ["--resume", str(vggface2)]) == ExitCode.MODEL
    assert _error_lines(capsys.readouterr().err) == [
        (
            f"error: cannot resume from {vggface2}: it holds bare network weights (such as the VGGFace2 file), not a "
            "training checkpoint; to train from pretrained weights start without --resume and use --pretrained "
            "vggface2 or casia-webface (their files belong in $TORCH_HOME/checkpoints)"
        )
    ]
    assert not (tmp_path / "checkpoints").exists()  # refused before Lightning set anything up


def test_train_refuses_a_weights_only_age_checkpoint_as_a_ckpt(dataset, age_checkpoint, tmp_path, capsys):
    assert train.main(train_args(_own_folders(dataset, tmp_path)) + ["--resume", str(age_checkpoint)]) == ExitCode.MODEL
    assert _error_lines(capsys.readouterr().err) == [
        (
            f"error: cannot resume from {age_checkpoint}: it holds the age model's weights only (no "
            "optimizer_states, loops), so training cannot continue from it; use it with infer.py or evaluate.py "
            "--ckpt, or train again without --resume"
        )
    ]


def _checkpoint_with(age_checkpoint: Path, path: Path, **changes) -> Path:
    """`age_checkpoint` with its entries updated by `changes` (a dict value updates that dict)."""
    checkpoint = torch.load(age_checkpoint, weights_only=True)
    for key, value in changes.items():
        checkpoint[key] = {**checkpoint.get(key, {}), **value} if isinstance(value, dict) else value
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return path


def test_train_refuses_to_resume_with_other_settings_naming_both_values(dataset, age_checkpoint, tmp_path, capsys):
    resumable = _checkpoint_with(
        age_checkpoint,
        tmp_path / "old_run" / "last.ckpt",
        optimizer_states=[],
        loops={},
        hyper_parameters={"head_hidden_dim": 128},
        datamodule_hyper_parameters={"img_size": 160},
    )
    saved_config = tmp_path / "old_run" / "config.json"  # what train.py writes beside its checkpoints
    saved_config.write_text("{}")
    assert train.main(train_args(_own_folders(dataset, tmp_path)) + ["--resume", str(resumable)]) == ExitCode.MODEL
    assert _error_lines(capsys.readouterr().err) == [
        (
            f"error: cannot resume from {resumable}: it was trained with img_size 160 (this command: 80); "
            f"head_hidden_dim 128 (this command: 256); resume with the same settings (--config {saved_config}) or "
            "train again without --resume"
        )
    ]


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"hyper_parameters": {"head_hidden_dim": 128}}, "records head_hidden_dim 128 but its weights have 256"),
        ({"usage": {"min_age": 0, "max_age": 90}}, "predicts ages 0..90, but this version's age bins are 0..100"),
    ],
    ids=["head_hidden_dim", "age_range"],
)
def test_infer_refuses_an_age_checkpoint_trained_with_other_settings(
    changes, needle, photo_dir, torch_home_with_vggface2, age_checkpoint, tmp_path, capsys
):
    other = _checkpoint_with(age_checkpoint, tmp_path / "other.ckpt", **changes)
    photos = [str(photo_dir / "astronaut.jpg"), str(photo_dir / "astronaut_edit.jpg")]
    assert infer.main([*photos, str(tmp_path / "out"), "--ckpt", str(other)]) == infer.EXIT_MODEL
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and needle in lines[0] and str(other) in lines[0], lines


# --- the Python API -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def analyzer(_vggface2_file) -> FaceAnalyzer:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(_vggface2_file[0]))
        return FaceAnalyzer(with_age=False, device="cpu")


NOT_A_PHOTO = {"None": None, "int": 5, "list": ["astronaut.jpg"], "tensor": torch.zeros(3, 160, 160)}


@pytest.mark.parametrize("method", ["detect", "embed", "compare"])
@pytest.mark.parametrize("photo", NOT_A_PHOTO.values(), ids=NOT_A_PHOTO.keys())
def test_the_api_refuses_what_is_not_a_photo_saying_what_is(analyzer, astronaut, method, photo):
    call = (lambda p: analyzer.compare(astronaut, p)) if method == "compare" else getattr(analyzer, method)
    with pytest.raises(TypeError, match=r"a photo must be a file path \(str or pathlib.Path\), image bytes, a PIL"):
        call(photo)


UNUSABLE_ARRAYS = {
    "empty": (np.empty((0, 0, 3), np.uint8), "it is empty"),
    "no rows": (np.zeros((0, 40, 3), np.uint8), "it is empty"),
    "float": (np.zeros((40, 40, 3), np.float32), "expected uint8 HxW, HxWx3"),
    "two channels": (np.zeros((40, 40, 2), np.uint8), "expected uint8 HxW, HxWx3"),
}


@pytest.mark.parametrize(("array", "needle"), UNUSABLE_ARRAYS.values(), ids=UNUSABLE_ARRAYS.keys())
def test_the_api_refuses_an_unusable_array_saying_why(analyzer, array, needle):
    with pytest.raises(ValueError, match=needle):
        analyzer.embed(array)


def test_analyze_many_refuses_a_single_photo(analyzer, astronaut):
    with pytest.raises(TypeError, match="for one photo use analyze"):
        list(analyzer.analyze_many("astronaut.jpg"))


@pytest.mark.parametrize(
    ("threshold", "error", "needle"),
    [(-2, ValueError, r"cosine similarity in \[-1, 1\], not -2"), ("0.5", TypeError, "must be a number")],
)
def test_compare_refuses_a_threshold_that_is_not_a_similarity(analyzer, astronaut, threshold, error, needle):
    with pytest.raises(error, match=needle):
        analyzer.compare(astronaut, astronaut, threshold=threshold)


@pytest.mark.parametrize(
    ("options", "error", "needle"),
    [
        ({"precision": "x"}, ValueError, "precision must be one of auto, 32, bf16, 16 or None, not 'x'"),
        ({"config": {"face_selection": "largest"}}, TypeError, "config must be a config.Config"),
        ({"device": 0}, TypeError, "device must be a str such as 'auto', 'cpu' or 'cuda:1'"),
        ({"age_checkpoint": 3}, TypeError, "age_checkpoint must be a file path"),
    ],
    ids=["precision", "config", "device", "age_checkpoint"],
)
def test_bad_options_are_refused_at_construction_naming_the_option(options, error, needle):
    with pytest.raises(error, match=needle):
        FaceAnalyzer(**options)


def test_evaluate_age_crops_faces_at_the_size_the_checkpoint_was_trained_at(
    dataset, age_checkpoint, tmp_path, monkeypatch, capsys
):
    trained_at_80 = _checkpoint_with(age_checkpoint, tmp_path / "80.ckpt", datamodule_hyper_parameters={"img_size": 80})
    sizes, real_dataset = [], loader.FaceAgeDataset

    def dataset_of_size(images, csv_path, img_size, **options):
        sizes.append(img_size)
        return real_dataset(images, csv_path, img_size, **options)

    monkeypatch.setattr(loader, "FaceAgeDataset", dataset_of_size)
    argv = ["age", "--images", str(dataset.val_dir), "--csv", str(dataset.val_csv), "--ckpt", str(trained_at_80)]
    assert evaluate.main([*argv, "--out", str(tmp_path / "eval")]) == 0
    assert sizes == [80]  # not the config's 160
