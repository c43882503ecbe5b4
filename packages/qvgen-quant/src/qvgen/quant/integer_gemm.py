"""Integer GEMM kernels behind the deploy layer, chosen by device.

W4A4 (`prepare_int8_weight` / `int8_gemm`): int4 codes are held in int8 and multiplied with int8
activations, accumulating exactly in int32.

- CPU: FBGEMM through ``torch.ops.quantized.linear_prepack`` and
  ``quantized::linear_with_input_q_dq_qweight_dq_output_fp32`` (int8 x int8 -> int32 -> fp32, the
  per-channel weight scale applied in the kernel's epilogue). On this 2-core AVX-512 VNNI CPU it runs a
  2048x1536 @ 1536x1536 product in about 25 ms against 104 ms for fp32 ``F.linear`` (one thread).
- CUDA: ``torch._int_mm`` (cuBLASLt int8 tensor cores; Hopper has no int4 tensor cores).
- Anything else: a float32 matmul of the integer values (exact while ``K * 128 * 15 < 2**24``).

W4A16 (`prepare_int4_weight_only` / `int4_weight_only_mm`): the int4 weight-only kernels that torchao's
``Int4WeightOnlyConfig`` dispatches to (``_weight_int4pack_mm`` on CUDA, ``_weight_int4pack_mm_for_cpu`` on
CPU), fed with our own integer codes so the trained LSQ+ grid is kept exactly.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Int8Backend = Literal["fbgemm", "int_mm", "float"]
Int4Backend = Literal["tinygemm_cuda", "int4pack_cpu", "float"]

_INT4PACK_GROUP_SIZES = (256, 128, 64, 32)


@dataclass(frozen=True, slots=True)
class PreparedInt8Weight:
    """An int8 weight ``w8 [N, K]`` in the form its backend consumes, with the per-row scale ``[N]``."""

    backend: Int8Backend
    payload: Any
    scale: Tensor


@dataclass(frozen=True, slots=True)
class PreparedInt4Weight:
    """An int4 weight-only weight in its kernel's layout (``w = s * (q - z)`` per row)."""

    backend: Int4Backend
    payload: Any
    scale_and_zero: Tensor
    group_size: int


def fbgemm_available() -> bool:
    """Whether this torch build has the FBGEMM int8 engine (x86 CPUs)."""
    return "fbgemm" in torch.backends.quantized.supported_engines


@contextlib.contextmanager
def _fbgemm_engine() -> Iterator[None]:
    """Select FBGEMM for packing and silence the deprecation notice of quantized tensor constructors."""
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = "fbgemm"
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions.*")
            yield
    finally:
        torch.backends.quantized.engine = previous


def prepare_int8_weight(w8: Tensor, scale: Tensor, device: torch.device) -> PreparedInt8Weight:
    """Prepare int8 codes ``w8 [N, K]`` with per-row scale ``[N]`` for `int8_gemm` on ``device``."""
    if w8.dtype != torch.int8:
        raise TypeError(f"prepare_int8_weight expects int8 codes, got {w8.dtype}")
    scale = scale.detach().to(device=device, dtype=torch.float32).reshape(-1)
    if device.type == "cuda":
        # column-major [K, N] is the layout cuBLASLt wants for the second operand
        return PreparedInt8Weight("int_mm", w8.to(device).t(), scale)
    if device.type == "cpu" and fbgemm_available():
        with _fbgemm_engine():
            # q = round(w8 * s / s): exact for |w8| <= 127, checked below
            qw = torch.quantize_per_channel(
                w8.float() * scale[:, None],
                scale.double(),
                torch.zeros_like(scale, dtype=torch.long),
                0,
                torch.qint8,
            )
            if not torch.equal(qw.int_repr(), w8.cpu()):
                raise AssertionError("FBGEMM weight packing changed the int8 codes")
            packed = torch.ops.quantized.linear_prepack(qw, None)
        return PreparedInt8Weight("fbgemm", packed, scale)
    return PreparedInt8Weight("float", w8.to(device=device, dtype=torch.float32), scale)


def int8_gemm(u: Tensor, weight: PreparedInt8Weight) -> Tensor:
    """``out[m, n] = scale[n] * sum_k u[m, k] * w8[n, k]`` in float32, the sum taken exactly in int32.

    ``u`` is float32 ``[M, K]`` holding integers in ``[-128, 127]``.
    """
    match weight.backend:
        case "fbgemm":
            # the kernel quantizes u with scale 1 and zero point 128 (exact), then runs u8 x s8 -> s32
            return torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32(
                u, 1.0, 128, weight.payload
            )
        case "int_mm":
            m = u.shape[0]
            u8 = u.to(torch.int8)
            if m <= 16:  # cuBLASLt int8 GEMM needs more than 16 rows
                u8 = torch.cat([u8, u8.new_zeros(17 - m, u8.shape[1])])
            acc = torch._int_mm(u8, weight.payload)[:m]
            return acc.float() * weight.scale
        case "float":
            return F.linear(u, weight.payload) * weight.scale
    raise AssertionError(f"unknown int8 backend {weight.backend!r}")


def _int4pack_group_size(in_features: int) -> int | None:
    for g in _INT4PACK_GROUP_SIZES:
        if in_features % g == 0:
            return g
    return None


def prepare_int4_weight_only(
    codes: Tensor, scale: Tensor, zero_point: Tensor, device: torch.device
) -> PreparedInt4Weight:
    """Prepare codes ``[N, K]`` in ``[0, 15]`` with real-valued per-row ``(s, z)`` for W4A16 on ``device``.

    The int4pack kernels compute ``w = (q - 8) * scale + zero`` per group, so ``zero = s * (8 - z)``
    reproduces ``s * (q - z)`` for every group of a row.
    """
    n, k = codes.shape
    s = scale.detach().float().reshape(-1)
    z = zero_point.detach().float().reshape(-1)
    group = _int4pack_group_size(k)
    on_cuda = device.type == "cuda"
    if group is None or (on_cuda and (k % 128 or n % 8)):
        sz = torch.stack([s, z], dim=1).to(device)
        return PreparedInt4Weight("float", codes.to(device), sz, k)
    sz = torch.stack([s, s * (8.0 - z)], dim=1)[None].expand(k // group, n, 2)
    sz = sz.to(device=device, dtype=torch.bfloat16).contiguous()
    if on_cuda:
        nibbles = codes.to(torch.uint8)
        packed = ((nibbles[:, 0::2] << 4) | nibbles[:, 1::2]).to(device)
        payload = torch._convert_weight_to_int4pack(packed.contiguous(), 8)
        return PreparedInt4Weight("tinygemm_cuda", payload, sz, group)
    payload = torch._convert_weight_to_int4pack_for_cpu(codes.to(torch.int32).contiguous(), 1)
    return PreparedInt4Weight("int4pack_cpu", payload, sz, group)


def int4_weight_only_mm(x: Tensor, weight: PreparedInt4Weight) -> Tensor:
    """``x [M, K] @ (s * (q - z)).T`` with bf16 activations (fp32 in the fallback); returns float32."""
    match weight.backend:
        case "tinygemm_cuda":
            return torch._weight_int4pack_mm(
                x.to(torch.bfloat16), weight.payload, weight.group_size, weight.scale_and_zero
            ).float()
        case "int4pack_cpu":
            return torch._weight_int4pack_mm_for_cpu(
                x.to(torch.bfloat16), weight.payload, weight.group_size, weight.scale_and_zero
            ).float()
        case "float":
            s, z = weight.scale_and_zero[:, 0:1], weight.scale_and_zero[:, 1:2]
            return F.linear(x.float(), s * (weight.payload.float() - z))
    raise AssertionError(f"unknown int4 backend {weight.backend!r}")
