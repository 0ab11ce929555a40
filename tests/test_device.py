import pytest

from face_match_age.device import DeviceUnavailableError, choose_device, decide_device


def _decide(device="auto", precision="auto", **machine):
    facts = {"cuda_available": False, "bf16_supported": False, "mps_available": False, **machine}
    return decide_device(device, precision, **facts)


def test_prefers_cuda_then_mps_then_cpu():
    assert _decide(cuda_available=True, mps_available=True).accelerator == "cuda"
    assert _decide(mps_available=True).accelerator == "mps"
    assert _decide().accelerator == "cpu"


def test_precision_follows_the_hardware():
    # in every script's vocabulary (--precision), and Lightning's for its Trainer
    choices = [
        _decide(cuda_available=True, bf16_supported=True),
        _decide(cuda_available=True, bf16_supported=False),
        _decide(),
        _decide(mps_available=True),
    ]
    assert [choice.precision for choice in choices] == ["bf16", "16", "32", "32"]
    assert [choice.lightning_precision for choice in choices] == ["bf16-mixed", "16-mixed", "32-true", "32-true"]


def test_explicit_requests_win_and_are_explained():
    choice = _decide("cpu", "bf16", cuda_available=True)
    assert (choice.accelerator, choice.precision, choice.lightning_precision) == ("cpu", "bf16", "bf16-mixed")
    assert "cpu requested" in choice.reason
    assert "precision bf16 requested" in choice.reason


def test_lightnings_precision_names_are_the_same_values():
    for lightning, ours in (("32-true", "32"), ("bf16-mixed", "bf16"), ("16-mixed", "16")):
        assert _decide("cpu", lightning).precision == ours
    with pytest.raises(ValueError, match="unknown precision '64-true'"):
        _decide("cpu", "64-true")


def test_a_gpu_by_index_is_that_gpu():
    choice = _decide("cuda:1", cuda_available=True)
    assert (choice.accelerator, choice.index, str(choice.device)) == ("cuda", 1, "cuda:1")


def test_reason_names_the_cause():
    assert "no CUDA or MPS" in _decide().reason
    assert "bfloat16" in _decide(cuda_available=True, bf16_supported=True, gpu_name="H100").reason
    assert "H100" in _decide(cuda_available=True, gpu_name="H100").describe()


def test_requesting_a_missing_gpu_fails_clearly():
    with pytest.raises(DeviceUnavailableError, match="'cuda' was requested but this machine has no such CUDA GPU"):
        _decide("cuda")


def test_this_machine_gets_a_working_choice():
    import torch

    choice = choose_device()
    assert torch.zeros(1, device=choice.device).device.type == choice.accelerator


def test_named_devices_are_checked_before_use():
    from face_match_age.device import resolve_device

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no such CUDA GPU"):
            resolve_device("cuda:0")
