"""Numeric precision of a training run: the autocast dtype, float32 heads, and CUDA backend flags."""

from __future__ import annotations

import types
from typing import Any

import torch
from torch import nn


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` (a CUDA device) computes bfloat16 natively (Ampere, sm80, and newer).

    ``torch.cuda.is_bf16_supported()`` also says True for GPUs that only emulate bf16 (T4, V100, RTX 20xx:
    no bf16 tensor cores) and asks the *current* device; this asks ``device`` and counts native support only.
    """
    if torch.version.hip:
        return True
    return torch.cuda.get_device_properties(device).major >= 8


def cpu_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (x86 AVX-512 BF16 or AMX-BF16).

    Elsewhere (AVX2-only x86, Apple and most Arm CPUs) oneDNN emulates bf16 and autocast makes steps slower
    than float32, so ``run.amp = "native"`` stays in float32 there. Older torch without
    ``torch.cpu.get_capabilities`` answers False: float32 is the safe side.
    """
    caps = getattr(torch.cpu, "get_capabilities", None)
    if caps is None:
        return False
    found = caps()
    return bool(found.get("avx512_bf16") or found.get("amx_bf16"))


def amp_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``run.amp``: None (float32) for "off", and for "auto" off CUDA.

    "auto" on CUDA: bfloat16 where the GPU has it natively, else float16 (with a GradScaler).
    "native": bfloat16 wherever the device computes it natively (CUDA sm80+, CPUs with AVX-512 BF16 or AMX),
    else float32; the setting for a preset that must be fast on this CPU and not slow on another.
    """
    if setting == "native":
        native = cpu_native_bf16() if device.type == "cpu" else device.type == "cuda" and native_bf16(device)
        return torch.bfloat16 if native else None
    if setting == "off" or (setting == "auto" and device.type != "cuda"):
        return None
    if setting == "fp16":
        return torch.float16
    if setting == "bf16" or native_bf16(device):
        return torch.bfloat16
    return torch.float16


def emulated_bf16_warning(setting: str, device: torch.device) -> str | None:
    """Why ``run.amp = setting`` will be slow on ``device``, or None: bf16 asked for by name on a CPU that only
    emulates it (a step took 13.5x an fp32 one on an AVX2 machine, docs/results/cpu_scale.md)."""
    if setting != "bf16" or device.type != "cpu" or cpu_native_bf16():
        return None
    return (f"run.amp=bf16 on a CPU without native bf16 ({torch.backends.cpu.get_cpu_capability()}, no AVX-512 "
            "BF16 or AMX): oneDNN emulates it and a training step takes about 13x an fp32 one; set run.amp=off, "
            "or run.amp=native for bf16 only where the CPU has it")


def _float32_forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
    with torch.autocast(_autocast_device(args), enabled=False):
        args = tuple(a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)
        return type(self).forward(self, *args, **kwargs)


def _autocast_device(args: tuple[Any, ...]) -> str:
    for a in args:
        if isinstance(a, torch.Tensor):
            return a.device.type
    return "cpu"


def float32_heads(model: nn.Module) -> None:
    """Run the projector and predictor (and BYOL's target projector) in float32 even under autocast.

    GSG chooses between pairs by comparing distances of projections; bf16 rounds the projections to 8 bits of
    mantissa before those distances are taken, and that flips the choice for a share of pairs when the
    projections nearly coincide (docs/gpu.md, F12). Only the backbone, where the compute is, runs in half
    precision. The module keeps its class and state_dict keys; its ``forward`` is rebound (a bound method, so
    ``copy.deepcopy`` rebinds it to the copy).
    """
    heads = [getattr(model, "projector", None), getattr(model, "predictor", None)]
    target = getattr(model, "target", None)
    if target is not None and "projector" in target:
        heads.append(target["projector"])
    for head in heads:
        if isinstance(head, nn.Module):
            head.forward = types.MethodType(_float32_forward, head)  # type: ignore[method-assign]


def configure_cuda_backends(device: torch.device) -> None:
    """cuDNN autotuning and TF32 for a CUDA run (process-wide flags, set once by the trainer).

    Shapes are fixed during training (``drop_last``), so autotuning pays for itself after the first steps.
    TF32 matters for float32 work only (``amp=off``, the float32 heads, the kNN GEMM, evaluations).
    """
    if device.type != "cuda":
        return
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.set_float32_matmul_precision("high")
