"""Instant answers: --help, a bad option and a missing input file are answered by every script before torch,
Lightning or facenet-pytorch is imported (bench/startup.py measures how long that takes)."""

import json
import sys
from pathlib import Path

import processes
import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # starts a fresh interpreter
HEAVY = ("torch", "lightning", "facenet_pytorch", "torchvision", "torchmetrics")
CASES = {
    "infer": [
        (["--help"], 0),
        (["--nope"], 2),
        (["--pairs", "p.csv", "out", "--columns", "photo=file_a"], 2),
        (["missing_1.jpg", "missing_2.jpg", "out"], 3),
        (["--pairs", "missing.csv", "out"], 3),
        (["compare", "--help"], 0),
        (["age", "--help"], 0),
        (["age", "missing_1.jpg", "out"], 3),
        (["missing_1.jpg", "out"], 3),
        (["compare", "missing_1.jpg", "missing_2.jpg", "out", "--precision", "bf16-mixed"], 3),
        (["pairs", "missing.csv", "out"], 3),
        (["folder", "missing", "out"], 3),
        (["folder", "missing", "out", "--all-faces"], 2),
    ],
    "evaluate": [
        (["--help"], 0),
        (["verify", "--help"], 0),
        (["age", "--nope"], 2),
        (["verify", "--pairs", "missing.csv", "--out", "out"], 3),
        (["age", "--csv", "missing.csv", "--out", "out"], 3),
        (["retrieve", "--csv", "missing.csv", "--images", ".", "--out", "out"], 3),
        (["leakage", "--data-dir", "missing"], 3),
    ],
    "data_prep": [
        (["--help"], 0),
        (["--nope"], 2),
        (["--dataset", "csv", "--images", ".", "--csv", "missing.csv"], 3),
    ],
    "train": [
        (["--help"], 0),
        (["--nope"], 2),
        (["--data-dir", "missing"], 3),
        (["--ckpt", "last.ckpt"], 2),
    ],
}
# One interpreter for every case (each a fresh one would cost seconds of test time): each script's main is run
# on each command line, and what it imported is read from sys.modules right after.
PROBE = """
import contextlib, io, json, sys
cases, results = json.loads(sys.argv[1]), []
for script, runs in cases.items():
    main = __import__(script).main
    for argv, _ in runs:
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as stop:
                code = stop.code
        heavy = sorted(name for name in json.loads(sys.argv[2]) if name in sys.modules)
        results.append([script, argv, code, heavy, err.getvalue().strip().splitlines()[-1:]])
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def answers(tmp_path_factory):
    folder = tmp_path_factory.mktemp("startup")
    result = processes.run(
        [sys.executable, "-c", PROBE, json.dumps(CASES), json.dumps(HEAVY)],
        "every script's answer to each command line",
        cwd=folder,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "TORCH_HOME": str(folder / "th"), "HOME": str(folder)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert list(folder.iterdir()) == []  # nothing written: no OUT_DIR, no log folder
    rows = json.loads(result.stdout)
    return {(script, " ".join(argv)): (code, heavy, last) for script, argv, code, heavy, last in rows}


@pytest.mark.parametrize(
    ("script", "argv", "code"), [(script, argv, code) for script, runs in CASES.items() for argv, code in runs]
)
def test_answered_before_torch_is_imported(answers, script, argv, code):
    got, heavy, last = answers[(script, " ".join(argv))]
    assert got == code, last
    assert heavy == [], f"{script} {' '.join(argv)} imported {heavy}"
    if code == 3:  # a missing file: one line naming it
        assert "missing" in last[0], last
        assert any(why in last[0] for why in ("does not exist", "no such file", "cannot find the dataset")), last


def test_a_calibrated_threshold_is_printed_at_four_decimals_at_most():
    from face_match_age import cli

    result = {
        "verification": {"is_match": True, "similarity": 0.81234567, "threshold_used": 0.5233333110809326},
        "face_1": {"age": 30.4},
        "face_2": {"age": 41.6},
    }
    assert cli.summary_line(result) == "MATCH: similarity 0.8123 vs threshold 0.5233; ages 30 and 42"
    result["verification"]["threshold_used"] = 0.7
    assert "vs threshold 0.7;" in cli.summary_line(result)
