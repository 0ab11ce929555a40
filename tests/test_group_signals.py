"""Stops that reach every process of a job: Slurm's scancel, a pre-emption, systemctl stop and
`kill -TERM -- -PGID` signal the main process and its helpers (DataLoader workers, --devices processes, the
crop pool) at once. Each script must end as docs/ promise for a signal to its main process alone; and a
main process killed outright must not leave its helpers running."""

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import processes
import pytest
from synthetic import make_dataset, train_args

import infer
from face_match_age.files.embedding_store import EmbeddingStore

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # processes started and signalled


@pytest.fixture
def started():
    """Starts a probe script in a session (and process group) of its own; whatever of that group is left at the
    end of the test is killed, so that a failing test leaves no process behind."""
    groups = []

    def start(tmp_path: Path, probe: str, *args) -> tuple[subprocess.Popen, Path]:
        ready = tmp_path / "probe_ready"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
        # Output into files, not pipes: a full pipe would block the run.
        with open(tmp_path / "probe_out.txt", "w") as out, open(tmp_path / "probe_err.txt", "w") as err:
            process = subprocess.Popen(
                [sys.executable, str(ROOT / "tests" / probe), str(ready), *map(str, args)],
                cwd=tmp_path,
                env=env,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        groups.append(process.pid)
        stderr = (tmp_path / "probe_err.txt").read_text
        processes.wait_until(ready.exists, process, f"{probe} to get ready ({ready.name})", output=stderr)
        return process, ready

    yield start
    for group in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)


def _stop_group(process: subprocess.Popen, signum: int) -> int:
    os.killpg(process.pid, signum)  # the whole job at once, as a scheduler stops it
    return processes.wait(process, f"the process group to end after {signal.Signals(signum).name}")


def _stderr(tmp_path: Path) -> str:
    err = (tmp_path / "probe_err.txt").read_text()
    assert "Traceback" not in err, err[-3000:]
    assert "Error" not in err.replace("error: ", ""), err[-3000:]  # no BrokenPipeError, RuntimeError...
    return err


def _running(pid: int) -> bool:
    """Whether `pid` still runs (a zombie no longer does: it waits only to be reaped)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return False
    return fields[0] != "Z"


def _all_gone(pids: list[int]) -> bool:
    deadline = time.monotonic() + 60  # a safety net: they go at once
    while any(_running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not any(_running(pid) for pid in pids)


def test_training_stopped_with_its_dataloader_workers_saves_last_ckpt_and_exits_143(tmp_path, started):
    config = make_dataset(tmp_path / "data", train=12, val=4, size=80).replace(num_workers=2)
    process, _ = started(tmp_path, "train_probe.py", 1, *train_args(config, checkpoint_every_n_steps=0))
    assert _stop_group(process, signal.SIGTERM) == 143
    err = _stderr(tmp_path)
    last = config.checkpoint_dir / "last.ckpt"
    stop_lines = [line for line in err.splitlines() if line.startswith("stopped by")]
    assert len(stop_lines) == 1, err[-3000:]
    assert stop_lines[0].startswith(f"stopped by SIGTERM in epoch 0 at step 2; saved {last}; resume with: ")
    assert last.is_file()


@pytest.fixture
def two_pairs(photo_dir, tmp_path) -> Path:
    """Pairs whose four photos --devices 2 deals out as astronaut and two_people to the first worker, their
    partners to the second: the first photo of each worker completes pair 0."""
    pairs = tmp_path / "pairs.csv"
    with open(pairs, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["img1", "img2"])
        writer.writerow([photo_dir / "astronaut.jpg", photo_dir / "astronaut_edit.jpg"])
        writer.writerow([photo_dir / "two_people.jpg", photo_dir / "coffee.jpg"])  # no face in coffee
    return pairs


def _batch_command(pairs: Path, out: Path, checkpoint: Path, devices: int) -> list:
    return ["--pairs", pairs, out, "--devices", devices, "--device", "cpu", "--ckpt", checkpoint]


def _worker_pids(ready: Path) -> list[int]:
    pids = [int(line) for line in ready.read_text().split()]
    assert len(pids) == 2
    return pids


def test_a_batch_stopped_with_its_worker_processes_keeps_its_rows_and_resumes(
    two_pairs, tmp_path, torch_home_with_vggface2, age_checkpoint, started, capsys
):
    out = tmp_path / "out"
    process, ready = started(tmp_path, "stop_probe.py", "batch", *_batch_command(two_pairs, out, age_checkpoint, 2))
    workers = _worker_pids(ready)
    assert _stop_group(process, signal.SIGTERM) == 143
    assert infer.EXIT_TERMINATED == 143
    err = _stderr(tmp_path)
    assert err.splitlines()[-1] == (
        f"stopped by SIGTERM: 1 row kept in {out / 'results.jsonl'}; rerun the same command to resume"
    )
    assert [json.loads(line)["pair_index"] for line in (out / "results.jsonl").read_text().splitlines()] == [0]
    assert len((out / "results.csv").read_text().splitlines()) == 2  # the header and the same row
    assert _all_gone(workers)

    # One process for the rest: how many shared the work changes no row, so the batch is the same.
    assert infer.main(list(map(str, _batch_command(two_pairs, out, age_checkpoint, 1)))) == infer.EXIT_PAIRS_FAILED
    assert "resuming: 1 of 2 pairs already in" in capsys.readouterr().out
    assert len((out / "results.jsonl").read_text().splitlines()) == 2


def test_a_batch_killed_outright_takes_its_worker_processes_with_it(
    two_pairs, tmp_path, torch_home_with_vggface2, age_checkpoint, started
):
    process, ready = started(
        tmp_path, "stop_probe.py", "batch", *_batch_command(two_pairs, tmp_path / "out", age_checkpoint, 2)
    )
    workers = _worker_pids(ready)
    process.kill()  # SIGKILL to the main process alone: it cannot stop its workers itself
    processes.wait(process, "the main process to end after SIGKILL")
    assert _all_gone(workers), "worker processes outlived their main process"


def test_a_folder_run_stopped_by_sigterm_keeps_the_photos_of_the_unfinished_chunk(
    photo_dir, tmp_path, torch_home_with_vggface2, age_checkpoint, started
):
    out = tmp_path / "out"
    command = ["--folder", photo_dir, out, "--device", "cpu", "--ckpt", age_checkpoint]
    process, _ = started(tmp_path, "stop_probe.py", "folder", *command)
    assert _stop_group(process, signal.SIGTERM) == 143
    err = _stderr(tmp_path)
    store = out / "embeddings"
    assert err.splitlines()[-1] == f"stopped by SIGTERM: 2 photos kept in {store}; rerun the same command to resume"
    assert len(EmbeddingStore(store).files()) == 2  # the two photos done, far from a whole chunk of 256


def test_data_prep_stopped_with_its_crop_workers_keeps_its_crops(tmp_path, started):
    import pandas as pd
    from dataset_archives import face_photo

    folder = tmp_path / "mine"
    folder.mkdir()
    rows = [{"name": f"p{i}.jpg", "age": 20 + i, "identity": f"id{i}"} for i in range(40)]
    for number, row in enumerate(rows):
        face_photo(number).save(folder / row["name"], format="JPEG")
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    out = tmp_path / "prepared"
    process, _ = started(
        tmp_path,
        "stop_probe.py",
        "prep",
        *("--data-root", tmp_path / "data", "--dataset", "csv", "--images", folder, "--csv", tmp_path / "labels.csv"),
        *("--out", out, "--no-detect", "--workers", 2),
    )
    assert _stop_group(process, signal.SIGTERM) == 143
    err = _stderr(tmp_path)
    assert err.splitlines()[-1].startswith("stopped by SIGTERM: ")
    logged = [json.loads(line) for line in (out / "crop_log.jsonl").read_text().splitlines()]
    assert len(logged) >= 2
    assert all(Path(entry["dest"]).is_file() for entry in logged)  # every crop logged is kept
    assert not list(out.rglob("*.tmp"))
