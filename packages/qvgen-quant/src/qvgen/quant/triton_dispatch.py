"""When the Triton kernels may run: checks that import nothing heavy (triton itself is optional).

`w4a4_triton` (fused W4A4 deploy linear) and `fake_quant_triton` (fused fake-quant for QAT) are imported
only once these say yes, so CPU installs without the ``triton`` extra never import Triton.
"""

from __future__ import annotations

import importlib.util
import os

import torch
from torch import Tensor

K_MULTIPLE = 64
"""A fused W4A4 layer's in_features must be a multiple of this (the smallest K tile)."""
N_MULTIPLE = 16
"""A fused W4A4 layer's out_features must be a multiple of this."""
MAX_ACT_BITS = 8
"""Activation codes ``q - o`` must fit int8."""
MAX_FAKE_QUANT_WIDTH = 16384
"""The fused fake quantizers hold one row in registers: rows up to this many elements."""
_HALF = (torch.bfloat16, torch.float16)

_fake_quant_enabled = os.environ.get("QVGEN_FUSED_FAKE_QUANT", "1") != "0"


def triton_available() -> bool:
    """Whether the ``triton`` package can be imported (the ``qvgen-quant[triton]`` extra)."""
    return importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    """Whether Triton runs its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def fused_w4a4_unsupported(x: Tensor, in_features: int, out_features: int, act_bits: int) -> str | None:
    """Why the fused W4A4 kernel cannot take this call, or None when it can."""
    if not triton_available():
        return "triton is not installed (pip install 'qvgen-quant[triton]')"
    if x.device.type != "cuda" and not interpreting():
        return f"input is on {x.device.type}, the fused kernel runs on CUDA"
    if x.dtype not in _HALF:
        return f"input dtype is {x.dtype}; the fused kernel takes bfloat16/float16"
    if not x.is_contiguous():
        return "input is not contiguous"
    if in_features % K_MULTIPLE:
        return f"in_features={in_features} is not a multiple of {K_MULTIPLE}"
    if out_features % N_MULTIPLE:
        return f"out_features={out_features} is not a multiple of {N_MULTIPLE}"
    if act_bits > MAX_ACT_BITS:
        return f"{act_bits}-bit activations do not fit int8 codes"
    if x.numel() == 0:
        return "input is empty"
    return None


def set_fused_fake_quant(enabled: bool) -> bool:
    """Switch the fused CUDA fake quantizers on or off (default on; env ``QVGEN_FUSED_FAKE_QUANT=0``); return the old value."""
    global _fake_quant_enabled
    old, _fake_quant_enabled = _fake_quant_enabled, enabled
    return old


def use_fused_fake_quant(t: Tensor) -> bool:
    """Whether a fake quantizer should run the fused Triton kernels for ``t`` (CUDA, fp32/bf16/fp16 rows)."""
    return (
        _fake_quant_enabled
        and type(t) in (torch.Tensor, torch.nn.Parameter)  # not DTensor or other subclasses
        and t.device.type == "cuda"
        and t.dtype in (torch.float32, *_HALF)
        and t.dim() >= 1
        and 0 < t.shape[-1] <= MAX_FAKE_QUANT_WIDTH
        and t.numel() > 0
        and triton_available()
    )
