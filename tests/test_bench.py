import re

import bench_train


def test_benchmark_prints_both_loops_and_their_ratio(capsys):
    code = bench_train.main(["--batch-size", "4", "--steps", "1", "--img-size", "80", "--accelerator", "cpu",
                             "--num-workers", "0"])
    assert code == 0
    out = capsys.readouterr().out
    rates = {name: float(rate) for name, rate in re.findall(r"^(bare torch|lightning)\s+([\d.]+)", out, re.M)}
    assert set(rates) == {"bare torch", "lightning"} and all(rate > 0 for rate in rates.values())
    ratio = float(re.search(r"lightning / bare throughput: ([\d.]+)", out).group(1))
    assert abs(ratio - rates["lightning"] / rates["bare torch"]) < 0.01


def test_inference_benchmark_prints_every_ratio(capsys, torch_home_with_vggface2, age_checkpoint):
    import bench_infer

    assert bench_infer.main(["--photos", "3", "--repeats", "1", "--ckpt", str(age_checkpoint)]) == 0
    out = capsys.readouterr().out
    for measure in ("warm pair latency", "cold pair latency", "batch faces/s vs floor", "batch vs our pair-by-pair"):
        line = next(line for line in out.splitlines() if line.startswith(measure))
        ours, floor, ratio = (float(v) for v in re.findall(r"[\d.]+", line.split(")")[-1].split("  goal")[0])[:3])
        assert ours > 0 and floor > 0 and abs(ratio - ours / floor) < 0.02 * ratio + 0.01, line


def test_preparation_benchmark_covers_every_configuration(capsys):
    import bench_prep

    assert bench_prep.main(["--photos", "16"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()
            if line.startswith(("resize", "MTCNN"))]
    assert len(rows) == 4 and all(float(row[-3]) > 0 and float(row[-2]) > 0 for row in rows)
