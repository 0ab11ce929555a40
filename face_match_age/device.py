"""The one device and precision chooser: cuda, then mps, then cpu, with the reason for the choice.

`decide_device` is the pure rule (testable anywhere); `choose_device` probes this machine and applies it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from face_match_age.settings import LIGHTNING_PRECISION, LightningPrecision, devices_value, precision_value


class DeviceUnavailableError(ValueError):
    """A device this machine lacks (`--device cuda` without a GPU): the message is one line saying what to ask
    for instead. A ValueError, as an unknown device name is."""


@dataclass(frozen=True)
class DeviceChoice:
    accelerator: str  # "cuda" | "mps" | "cpu": what torch.device and Lightning's Trainer both accept
    precision: str  # in every script's vocabulary (--precision): "32", "bf16" or "16"
    reason: str  # one sentence a user can read to see why
    index: int | None = None  # the GPU of --device cuda:N; None: not named

    @property
    def device(self) -> torch.device:
        return torch.device(self.accelerator, self.index) if self.index is not None else torch.device(self.accelerator)

    @property
    def lightning_precision(self) -> LightningPrecision:
        """The precision as Lightning's Trainer takes it, e.g. "bf16-mixed"."""
        return LIGHTNING_PRECISION[self.precision]

    def describe(self) -> str:
        """e.g. "cuda, precision bf16 (CUDA GPU found (H100); the GPU supports bfloat16...)"."""
        return f"{self.accelerator}, precision {self.precision} ({self.reason})"


def decide_device(
    requested_device: str,
    requested_precision: str,
    *,
    cuda_available: bool,
    bf16_supported: bool,
    mps_available: bool,
    gpu_name: str = "",
) -> DeviceChoice:
    """Pick the device and precision from what was asked for (--device: auto, cpu, cuda, cuda:N or mps;
    --precision: auto, 32, bf16 or 16, or Lightning's spellings of them) and what the machine has."""
    reasons = []
    accelerator, _, index = str(requested_device).partition(":")
    if index and (accelerator != "cuda" or not index.isdigit()):
        raise ValueError(f"unknown device {requested_device!r}; use auto, cpu, cuda, cuda:N or mps")
    if accelerator == "auto":
        if cuda_available:
            accelerator, why = "cuda", f"CUDA GPU found ({gpu_name or 'unnamed'})"
        elif mps_available:
            accelerator, why = "mps", "Apple GPU (MPS) found, no CUDA"
        else:
            accelerator, why = "cpu", "no CUDA or MPS GPU found"
        reasons.append(why)
    else:
        available = {"cuda": cuda_available, "mps": mps_available, "cpu": True}
        if accelerator not in available:
            raise ValueError(f"unknown device {requested_device!r}; use auto, cpu, cuda, cuda:N or mps")
        if not available[accelerator]:
            missing = "this machine has no such CUDA GPU" if accelerator == "cuda" else "MPS is not available here"
            # the words of resolve_device: every script says a missing device the same way
            raise DeviceUnavailableError(
                f"device {requested_device!r} was requested but {missing}; use --device auto or cpu"
            )
        reasons.append(f"{requested_device} requested")

    precision = precision_value(requested_precision)
    if precision == "auto":
        if accelerator == "cuda" and bf16_supported:
            precision, why = "bf16", "the GPU supports bfloat16, which needs no loss scaling"
        elif accelerator == "cuda":
            precision, why = "16", "the GPU lacks bfloat16, so float16 with loss scaling"
        else:
            # Mixed precision on CPU is slower than float32, and MPS autocast is not reliable across torch releases.
            precision, why = "32", f"mixed precision brings no gain on {accelerator}"
        reasons.append(why)
    elif precision in LIGHTNING_PRECISION:
        reasons.append(f"precision {precision} requested")
    else:
        raise ValueError(f"unknown precision {requested_precision!r}; use auto, 32, bf16 or 16")
    return DeviceChoice(accelerator, precision, "; ".join(reasons), int(index) if index else None)


def choose_device(requested_device: str = "auto", requested_precision: str = "auto") -> DeviceChoice:
    """Probe this machine and choose the device and precision (see `decide_device`); a cuda:N this machine
    lacks is a DeviceUnavailableError."""
    cuda_available = torch.cuda.is_available()
    mps_backend = getattr(torch.backends, "mps", None)
    if str(requested_device).startswith("cuda:"):
        resolve_device(requested_device)  # the GPU index exists, or one line says so
    return decide_device(
        requested_device,
        requested_precision,
        cuda_available=cuda_available,
        bf16_supported=cuda_available and torch.cuda.is_bf16_supported(),
        mps_available=bool(mps_backend and mps_backend.is_available()),
        gpu_name=torch.cuda.get_device_name(0) if cuda_available else "",
    )


def resolve_device(requested: str) -> torch.device:
    """A torch device from "auto" (see choose_device) or a name such as "cpu", "cuda", "cuda:1", "mps";
    a device this machine lacks is a ValueError that says so, not a failure deep inside a model."""
    if requested == "auto":
        return choose_device().device
    try:
        device = torch.device(requested)
    except (RuntimeError, ValueError):
        raise ValueError(f"unknown device {requested!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise DeviceUnavailableError(
            f"device {requested!r} was requested but this machine has no such CUDA GPU; use --device auto or cpu"
        )
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceUnavailableError(
            f"device {requested!r} was requested but MPS is not available here; use --device auto or cpu"
        )
    return device


def batch_process_count(devices: str, device: str) -> int:
    """How many processes share infer.py's batch, from --devices (config.devices, read by config.devices_value)
    and --device: a count as given; auto, as in train.py, every CUDA GPU when the batch runs on CUDA (--device
    auto or cuda), else 1 (CPU, MPS, or one named GPU such as cuda:1). GPU indices cannot be honoured, since
    each process takes cuda:<its rank>: a ValueError says how to choose GPUs instead."""
    value = devices_value(devices)
    if isinstance(value, list):
        raise ValueError(
            f"infer.py --devices takes a count or auto, not GPU indices ({devices}); to use GPUs "
            f"{devices}, run with CUDA_VISIBLE_DEVICES={devices} and --devices {len(value)}"
        )
    if isinstance(value, str):  # "auto", the one text devices_value returns
        return max(1, torch.cuda.device_count()) if device in ("auto", "cuda") and torch.cuda.is_available() else 1
    return value


# Linux's /proc/cpuinfo names for native bfloat16 arithmetic: x86's AVX-512 BF16 and AMX, ARMv8.6's BF16.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this processor computes bfloat16 natively, read from the CPU flags (Linux). Without it torch
    emulates bfloat16, which is slower than float32; where the flags cannot be read the answer is no."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86, ARM
            return bool(NATIVE_BF16_FLAGS & set(value.split()))
    return False


class PrecisionError(ValueError):
    """An inference precision the chosen device cannot run, or runs slower than float32."""


def decide_inference_precision(requested: str, device_type: str, *, gpu_bf16: bool, cpu_bf16: bool) -> str:
    """The pure rule behind inference_precision: "32", "bf16" or "16" from "auto" or one of those, for a
    device type ("cuda", "mps", "cpu"), where the GPU supports bfloat16 (gpu_bf16) and where the CPU computes it
    natively (cpu_bf16). A request the device cannot honour well raises a PrecisionError that says what to use."""
    if requested == "auto":
        if device_type == "cuda":
            return "bf16" if gpu_bf16 else "16"
        return "32"  # CPU: bf16 changes numbers, so it is asked for, not assumed; MPS autocast is not reliable
    if requested == "32":
        return requested
    if device_type == "cuda":
        if requested == "bf16" and not gpu_bf16:
            raise PrecisionError("--precision bf16: this GPU has no native bfloat16; use --precision 16 (or auto)")
        return requested
    if device_type == "cpu" and requested == "bf16":
        if cpu_bf16:
            return requested
        raise PrecisionError(
            "--precision bf16: this CPU has no native bfloat16 (AVX-512 BF16 or AMX), so torch would emulate it, "
            "slower than float32; use --precision 32 (or auto)"
        )
    raise PrecisionError(
        f"--precision {requested}: reduced precision on {device_type} is offered as bf16 on CPUs with native "
        "bfloat16 only (float16 is for CUDA GPUs); use --precision 32 (or auto)"
    )


def resolve_inference_precision(requested: str, device: torch.device) -> str:
    """The inference precision ("32", "bf16" or "16") for `requested` on `device`, probing this machine
    (see decide_inference_precision); a request it cannot honour well is a PrecisionError."""
    requested = precision_value(requested)  # Lightning's spellings (bf16-mixed) are the same values
    gpu_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False)
    cpu_bf16 = device.type == "cpu" and requested == "bf16" and cpu_has_native_bf16()
    return decide_inference_precision(requested, device.type, gpu_bf16=gpu_bf16, cpu_bf16=cpu_bf16)


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a resolved inference precision; None for float32 (no autocast)."""
    return {"32": None, "bf16": torch.bfloat16, "16": torch.float16}[precision]
