"""Inference options (bf16, channels-last, torch.compile) keep float32's decisions within the bounds
of docs/inference.md, and a precision the device cannot run well is refused before any model loads."""

import functools
import json
import os

import pytest
import torch

import evaluate
import infer
from face_match_age import device as device_module
from face_match_age.device import (
    PrecisionError,
    cpu_has_native_bf16,
    decide_inference_precision,
    resolve_inference_precision,
)
from face_match_age.inference.analyzer import FaceAnalyzer
from face_match_age.inference.numerics import numeric_change

TEST_PHOTOS = ("astronaut.jpg", "astronaut_edit.jpg", "two_people.jpg")  # 4 faces, 6 pairs
# The test faces' float32 similarities lie between 0.983 and 0.996 (random weights find them all alike): a
# threshold among them gives both verdicts, so a flip could show.
THRESHOLD = 0.99
BF16_SIMILARITY_BOUND, BF16_AGE_BOUND = 0.01, 0.5  # the bounds stated in docs/inference.md
EXACT_SIMILARITY_BOUND, EXACT_AGE_BOUND = 1e-4, 0.01  # a memory format or compiler reorders sums, nothing more
# Compiling InceptionResnetV1 takes over a minute on a 2-core CPU, so that test runs only when asked for.
RUN_COMPILE_TEST = os.environ.get("FACE_MATCH_AGE_TEST_COMPILE") == "1"


@pytest.fixture
def make_analyzer(torch_home_with_vggface2, age_checkpoint):
    return functools.partial(FaceAnalyzer, age_checkpoint=age_checkpoint, device="cpu")


@pytest.fixture
def test_photos(photo_dir):
    return [photo_dir / name for name in TEST_PHOTOS]


@pytest.fixture
def bf16_allowed(monkeypatch):
    """bf16 runs on this CPU even where it is not native: emulated, it is slower, not different."""
    monkeypatch.setattr(device_module, "cpu_has_native_bf16", lambda: True)


def test_bf16_keeps_the_verdicts_and_moves_similarity_and_age_within_bounds(make_analyzer, test_photos, bf16_allowed):
    change = numeric_change(make_analyzer, {"precision": "bf16"}, test_photos, THRESHOLD)
    assert change.faces == 4
    assert 0 < change.matches < change.pairs
    assert not change.verdict_flipped
    assert change.similarity <= BF16_SIMILARITY_BOUND
    assert change.age <= BF16_AGE_BOUND
    assert change.similarity > 0  # bf16 really ran: it rounds


def _assert_float32s_answers(change) -> None:
    """An option that only reorders sums: the verdicts of fp32 (on pairs where both verdicts occur), and its
    similarities and ages within float noise."""
    assert 0 < change.matches < change.pairs
    assert not change.verdict_flipped
    assert change.similarity <= EXACT_SIMILARITY_BOUND
    assert change.age <= EXACT_AGE_BOUND


def test_channels_last_gives_float32s_answers(make_analyzer, test_photos):
    change = numeric_change(make_analyzer, {"channels_last": True}, test_photos, THRESHOLD)
    _assert_float32s_answers(change)


@pytest.mark.skipif(
    not RUN_COMPILE_TEST, reason="compiling takes minutes on CPU; FACE_MATCH_AGE_TEST_COMPILE=1 runs it"
)
def test_compiled_networks_give_float32s_answers_with_a_partial_last_batch(
    torch_home_with_vggface2, age_checkpoint, test_photos
):
    from config import Config

    config = Config(inference_batch_size=3)  # 4 faces: a full batch of 3, then one face (a second shape)
    make_analyzer = functools.partial(FaceAnalyzer, config, age_checkpoint=age_checkpoint, device="cpu")
    change = numeric_change(make_analyzer, {"compile_networks": True}, test_photos, THRESHOLD)
    _assert_float32s_answers(change)


@pytest.mark.parametrize(
    ("count", "largest", "expected"),
    [(1, 64, 1), (2, 64, 2), (3, 64, 4), (16, 64, 16), (17, 64, 32), (40, 64, 64), (64, 64, 64), (40, 48, 48)],
)
def test_compiled_networks_get_batches_padded_to_a_power_of_two_at_most_the_batch_size(count, largest, expected):
    from face_match_age.inference.analyzer import compiled_batch_size

    assert compiled_batch_size(count, largest) == expected


def test_auto_precision_on_a_cpu_is_float32():
    assert resolve_inference_precision("auto", torch.device("cpu")) == "32"


def test_auto_precision_on_a_gpu_is_bf16_where_supported_else_float16():
    assert decide_inference_precision("auto", "cuda", gpu_bf16=True, cpu_bf16=False) == "bf16"
    assert decide_inference_precision("auto", "cuda", gpu_bf16=False, cpu_bf16=False) == "16"


def test_bf16_on_a_gpu_without_it_is_refused_with_what_to_use():
    with pytest.raises(PrecisionError, match="use --precision 16"):
        decide_inference_precision("bf16", "cuda", gpu_bf16=False, cpu_bf16=False)


def test_reduced_precision_on_mps_is_refused():
    with pytest.raises(PrecisionError, match="use --precision 32"):
        decide_inference_precision("16", "mps", gpu_bf16=False, cpu_bf16=False)


@pytest.mark.parametrize(
    ("cpuinfo", "native"),
    [
        ("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16\n", True),
        ("processor\t: 0\nflags\t\t: fpu sse2 amx_tile amx_bf16\n", True),
        ("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n", False),
        ("processor\t: 0\nFeatures\t: fp asimd sve bf16\n", True),  # ARMv8.6
    ],
)
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, cpuinfo, native):
    (tmp_path / "cpuinfo").write_text(cpuinfo)
    assert cpu_has_native_bf16(tmp_path / "cpuinfo") is native


def test_unreadable_cpu_flags_mean_no_native_bf16(tmp_path):
    assert cpu_has_native_bf16(tmp_path / "missing") is False


def _usage_error(main, argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1
    return errors[0]


def test_bf16_on_a_cpu_without_native_bf16_is_a_one_line_usage_error(photo_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(device_module, "cpu_has_native_bf16", lambda: False)
    argv = [str(photo_dir / "astronaut.jpg"), str(photo_dir / "astronaut_edit.jpg"), str(tmp_path / "out")]
    error = _usage_error(infer.main, [*argv, "--precision", "bf16", "--device", "cpu"], capsys)
    assert "this CPU has no native bfloat16" in error
    assert "use --precision 32" in error
    assert not (tmp_path / "out").exists()


def test_float16_on_a_cpu_is_a_usage_error_that_says_it_is_for_cuda(photo_dir, tmp_path, capsys):
    argv = [str(photo_dir / "astronaut.jpg"), str(photo_dir / "astronaut_edit.jpg"), str(tmp_path / "out")]
    error = _usage_error(infer.main, [*argv, "--precision", "16", "--device", "cpu"], capsys)
    assert "float16 is for CUDA GPUs" in error


def test_evaluate_verify_refuses_float16_on_a_cpu(photo_dir, tmp_path, capsys):
    pairs = tmp_path / "pairs.csv"  # present: a missing input is answered first
    pairs.write_text(f"img1,img2,label\n{photo_dir / 'astronaut.jpg'},{photo_dir / 'coffee.jpg'},0\n")
    argv = ["verify", "--pairs", str(pairs), "--out", str(tmp_path / "out"), "--device", "cpu"]
    error = _usage_error(evaluate.main, [*argv, "--precision", "16"], capsys)
    assert "float16 is for CUDA GPUs" in error


def _pair_json(photo_dir, out, *options) -> dict:
    argv = [str(photo_dir / "astronaut.jpg"), str(photo_dir / "astronaut_edit.jpg"), str(out), "--json"]
    assert infer.main([*argv, "--device", "cpu", *options]) == 0
    return json.loads((out / "astronaut_vs_astronaut_edit_data.json").read_text())


def test_the_json_models_field_records_how_the_networks_ran(
    torch_home_with_vggface2, age_checkpoint, photo_dir, tmp_path, bf16_allowed
):
    models = _pair_json(photo_dir, tmp_path / "out", "--ckpt", str(age_checkpoint), "--precision", "bf16")["models"]
    assert models["precision"] == "bf16"
    assert models["channels_last"] is True
    assert models["compile"] is False


def test_the_json_records_auto_precision_as_resolved(torch_home_with_vggface2, photo_dir, tmp_path):
    models = _pair_json(photo_dir, tmp_path / "out", "--no-age", "--no-channels-last")["models"]
    assert models["precision"] == "32"
    assert models["channels_last"] is False


def test_a_batch_rerun_with_another_precision_is_another_batch(
    torch_home_with_vggface2, photo_dir, tmp_path, bf16_allowed, capsys
):
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"img1,img2\n{photo_dir / 'astronaut.jpg'},{photo_dir / 'astronaut_edit.jpg'}\n")
    argv = ["--pairs", str(pairs), str(tmp_path / "out"), "--no-age", "--device", "cpu"]
    assert infer.main(argv) == infer.EXIT_OK
    assert infer.main([*argv, "--precision", "bf16"]) == infer.EXIT_OUTPUT
    assert "inference_precision" in capsys.readouterr().err
