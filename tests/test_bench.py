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
