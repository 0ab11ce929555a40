"""The benchmark scripts run and print every row. Their figures are timings, so no test checks their
values or recomputes a ratio from the rounded printed figures: that depends on the machine's load."""

import math
import re

import processes
import pytest

import bench.train

pytestmark = pytest.mark.slow  # runs the benchmarks
NUMBER = r"[-+]?\d+(?:\.\d+)?"


def _figures(line: str) -> list[float]:
    return [float(value) for value in re.findall(NUMBER, line)]


def _row(out: str, label: str) -> str:
    """The one line of `out` holding `label`, then maybe a unit in brackets, then a figure."""
    rows = [line for line in out.splitlines() if re.match(rf"{re.escape(label)}(?: \(\w+\))?[\s:]+{NUMBER}", line)]
    assert len(rows) == 1, f"expected one row starting {label!r} in:\n{out}"
    return rows[0]


def test_training_benchmark_prints_both_loops_and_their_ratio(capsys):
    code = bench.train.main(
        ["--batch-size", "4", "--steps", "1", "--img-size", "80", "--device", "cpu", "--num-workers", "0"]
    )
    assert code == 0
    out = capsys.readouterr().out
    for label in ("bare torch", "lightning"):
        rate, wait = _figures(_row(out, label))[:2]
        assert math.isfinite(rate)
        assert rate >= 0
        assert 0 <= wait <= 100
    assert len(_figures(_row(out, "lightning / bare throughput:"))) >= 2
    assert _figures(_row(out, "peak memory"))[0] > 0


def test_inference_benchmark_prints_every_row(capsys, torch_home_with_vggface2, age_checkpoint):
    import bench.infer

    assert bench.infer.main(["--photos", "2", "--repeats", "1", "--ckpt", str(age_checkpoint)]) == 0
    out = capsys.readouterr().out
    for measure in ("warm pair latency", "cold pair latency", "batch faces/s vs floor", "batch vs our pair-by-pair"):
        figures = _figures(re.split(r"\s[<>]=", _row(out, measure).split(")")[-1])[0])  # before the goal
        assert len(figures) == 3, measure
        assert all(math.isfinite(f) and f >= 0 for f in figures), measure


def test_network_options_benchmark_prints_every_option_with_its_numerics(
    capsys, torch_home_with_vggface2, age_checkpoint, monkeypatch
):
    import bench.network_options
    from face_match_age import device

    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)  # where not native: emulated, slower, same rows
    assert bench.network_options.main(["--batch", "2", "--repeats", "1", "--ckpt", str(age_checkpoint)]) == 0
    out = capsys.readouterr().out
    for option in bench.network_options.OPTIONS:
        row = _row(out, option)
        figures = _figures(row[len(option) :])[:5]  # ms/face, speed-up, first call, |d sim|, |d age|
        assert len(figures) == 5, option
        assert all(math.isfinite(f) and f >= 0 for f in figures), option


def test_preparation_benchmark_covers_every_configuration(capsys):
    import bench.prep

    assert bench.prep.main(["--photos", "16"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("resize", "MTCNN"))]
    assert [(row.split()[0], _figures(row.split(")")[-1])[0]) for row in rows] == [
        ("resize", 1),
        ("resize", 2),
        ("MTCNN", 1),
        ("MTCNN", 2),
    ]
    assert all(len(_figures(row.split(")")[-1])) == 4 for row in rows)


def test_detection_benchmark_prints_every_way_for_both_collections(capsys):
    import bench.detection

    assert bench.detection.main(["--photos", "6", "--chunk", "4", "--bucket-sides", "64", "--repeats", "1"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("IMDB-like", "CACD-like"))]
    ways = ["photo by photo", "same-size batches", "buckets of 64 px"]
    assert [(row[:11].strip(), row[11:31].strip()) for row in rows] == [
        (collection, way) for collection in ("IMDB-like", "CACD-like") for way in ways
    ]
    assert [_figures(row[31:])[1] for row in rows if "photo by photo" in row] == [1.0, 1.0]  # the baseline's ratio
    assert [len(_figures(row[31:])) for row in rows] == [3, 3, 4] * 2  # photos/s, ratio, batches (and padding)


def test_search_benchmark_prints_every_size_and_finds_every_planted_copy(capsys):
    import bench.search

    assert bench.search.main(["--sizes", "500,1000", "--block", "300"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.split()[:1] in (["500"], ["1000"])]
    assert [row[0] for row in rows] == ["500", "1000"]
    assert [row[5] for row in rows] == ["5/5", "10/10"]


def test_folder_benchmark_prints_every_size_with_one_faces_row_per_photo(
    capsys, torch_home_with_vggface2, age_checkpoint
):
    import bench.folder

    argv = ["--sizes", "2,3", "--sides", "160", "--ckpt", str(age_checkpoint), "--device", "cpu"]
    assert bench.folder.main(argv) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["2"], ["3"])]
    assert [row[0] for row in rows] == ["2", "3"]
    assert [row[10] for row in rows] == ["2/2", "3/3"]  # faces.csv: one row per photo
    assert [len(row) for row in rows] == [12, 12]  # every column, the growth exponents included
    assert all(math.isfinite(float(value)) for row in rows for value in row[1:7])
    assert len(_figures(_row(out, "extrapolation, not a measurement:"))) >= 3


def test_folder_benchmark_reports_the_goal_size_as_measured_not_extrapolated(capsys):
    from bench.folder import GOAL_MB, GOAL_PHOTOS, print_memory_extrapolation

    smaller = {"size": GOAL_PHOTOS // 10, "beyond_mb": 300.0, "matches": 4950}
    print_memory_extrapolation([smaller, {"size": GOAL_PHOTOS, "beyond_mb": GOAL_MB + 1.0, "matches": 12}])
    out = capsys.readouterr().out
    assert out.startswith(f"measured: {GOAL_MB + 1} MB beyond the models for {GOAL_PHOTOS:,} photos and 12 matches")
    assert "over the goal" in out and "extrapolation" not in out


def test_ctrl_c_in_a_benchmark_is_one_line(monkeypatch, capsys):
    import runpy

    import bench.photos

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(bench.photos, "write_astronaut_variants", interrupted)
    monkeypatch.setattr("sys.argv", ["bench/prep.py", "--photos", "2"])
    with pytest.raises(SystemExit) as stopped:
        runpy.run_module("bench.prep", run_name="__main__")
    assert stopped.value.code == 130
    assert capsys.readouterr().err.startswith("interrupted: no figures were printed")


def test_overlap_benchmark_prints_both_modes_and_their_ratio(capsys, torch_home_with_vggface2, age_checkpoint):
    import bench.overlap

    argv = ["--photos", "2", "--photos-per-chunk", "1", "--rounds", "1", "--ckpt", str(age_checkpoint)]
    assert bench.overlap.main(argv) == 0
    out = capsys.readouterr().out
    for mode in ("sequential", "overlapped"):
        figures = _figures(_row(out, mode))
        assert len(figures) == 4, mode  # median, min, max faces/s; cores used
        assert all(math.isfinite(f) and f > 0 for f in figures), mode
    assert len(_figures(_row(out, "overlapped / sequential:"))) == 3


def _table_rows(markdown: str) -> dict[str, list[str]]:
    """{section title: its table's lines} of a report's `## ` sections."""
    sections = [section.splitlines() for section in markdown.split("\n## ")[1:]]
    return {lines[0]: [line for line in lines if line.startswith("| ")] for lines in sections}


def test_gpu_script_shrunk_writes_the_header_and_every_sections_table(
    tmp_path, torch_home_with_vggface2, age_checkpoint
):
    import bench.gpu
    from face_match_age.device import cpu_has_native_bf16

    report = tmp_path / "report.md"
    command = ["bash", "bench/gpu.sh", "--shrink", "--ckpt", str(age_checkpoint), str(report)]
    done = processes.run(command, "the shrunk GPU benchmark", capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    text = report.read_text()
    assert text.startswith("# GPU benchmark")
    assert "\n- card: " in text
    assert "\n- torch " in text
    assert "uv run python -m bench.options --device cpu --pairs 2" in text  # the exact commands
    assert "**Failed**" not in text
    tables = _table_rows(text)
    assert list(tables) == list(bench.gpu.SECTIONS.values())
    options_run = 3 if cpu_has_native_bf16() else 2  # bf16 is refused where the CPU would emulate it
    assert len(tables["Training (bench.train)"]) == 2 + 2 * 2  # header, rule, 2 precisions x 2 loops
    assert len(tables["Inference (bench.options)"]) == 2 + 1 + options_run  # header, rule, the floor, options
    assert len(tables["MTCNN (bench.detection)"]) == 2 + 2 * 3  # header, rule, 2 collections x 3 ways


def test_service_benchmark_prints_every_way_and_the_ratios(capsys, torch_home_with_vggface2, age_checkpoint):
    import bench.service

    argv = ["--requests", "2", "--clients", "2", "--repeats", "1", "--ckpt", str(age_checkpoint)]
    assert bench.service.main(argv) == 0
    out = capsys.readouterr().out
    for way in ("service, 2 concurrent clients", "service, 1 client (sequential)", "FaceAnalyzer, one process"):
        figures = _figures(_row(out, way)[len(way) :])
        assert len(figures) == 4 and all(math.isfinite(f) and f > 0 for f in figures), way  # req/s, p50, p95, CPU
    for ratio in ("concurrent / sequential requests/s:", "concurrent / FaceAnalyzer requests/s:"):
        assert _figures(_row(out, ratio))[0] > 0
    assert len(_figures(_row(out, "CPU per request, concurrent / sequential:"))) == 2
    assert "batches of the concurrent runs: 2 requests in" in out


def test_learning_benchmark_stopped_by_a_scheduler_prints_the_epochs_it_finished(tmp_path, monkeypatch, capsys):
    import json

    from synthetic import make_dataset

    import bench.learning
    import train

    make_dataset(tmp_path / "data", train=8, val=4, size=80)
    real_train = train.train

    def stopped_after_one_epoch(config, callbacks, **options):
        real_train(config.replace(max_epochs=1), callbacks, **options)
        raise train.TrainingStopped("SIGTERM", None, False, 1, 2)  # as train.train raises it on a scheduler's stop

    monkeypatch.setattr(train, "train", stopped_after_one_epoch)
    figures_file = tmp_path / "figures.json"
    options = ["--pretrained", "none", "--img-size", "80", "--batch-size", "4", "--num-workers", "0", "--device", "cpu"]
    code = bench.learning.main(["--data-dir", str(tmp_path / "data"), *options, "--json", str(figures_file)])
    assert code == 143  # what a shell reports for SIGTERM
    out, err = capsys.readouterr()
    assert "stopped by SIGTERM" in err and "Traceback" not in err
    (epoch,) = json.loads(figures_file.read_text())["epochs"]
    assert epoch["ratio"] == pytest.approx(epoch["val_mae"] / epoch["baseline_mae"])
    assert out.splitlines()[-1].split()[0] == str(epoch["epoch"])  # the table repeated with the finished epoch
