"""Pack unsigned integer codes of 1-4 bits two per byte (the int4 container), and unpack them.

The low nibble of byte ``j`` holds column ``2j``, the high nibble column ``2j + 1``; an odd last column is
padded with a zero nibble. 2- and 3-bit codes use the same 4-bit container.
"""

from __future__ import annotations

import torch
from torch import Tensor

CONTAINER_BITS = 4
"""Bits per stored code: every weight code of 1-4 bits occupies one nibble."""


def packed_columns(in_features: int) -> int:
    """Number of bytes per row that hold ``in_features`` nibbles."""
    return (in_features + 1) // 2


def pack_int4(codes: Tensor) -> Tensor:
    """Pack integer codes in ``[0, 15]`` of shape ``[rows, cols]`` into uint8 ``[rows, ceil(cols / 2)]``."""
    if codes.dim() != 2:
        raise ValueError(
            f"pack_int4 expects a 2-D [rows, cols] tensor of codes, got shape {tuple(codes.shape)}"
        )
    if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
        raise TypeError(f"pack_int4 expects an integer tensor of codes, got dtype {codes.dtype}")
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) > 15):
        raise ValueError(
            f"pack_int4 codes must lie in [0, 15], got range [{int(codes.min())}, {int(codes.max())}]"
        )
    rows, cols = codes.shape
    c = codes.to(torch.uint8)
    if cols % 2:
        c = torch.cat([c, c.new_zeros(rows, 1)], dim=1)
    return (c[:, 0::2] | (c[:, 1::2] << 4)).contiguous()


def unpack_int4(packed: Tensor, cols: int) -> Tensor:
    """Inverse of `pack_int4`: uint8 ``[rows, ceil(cols / 2)]`` to uint8 codes ``[rows, cols]``."""
    if packed.dtype != torch.uint8 or packed.dim() != 2:
        raise ValueError(
            f"unpack_int4 expects a 2-D uint8 tensor, got dtype {packed.dtype} shape {tuple(packed.shape)}"
        )
    if packed.shape[1] != packed_columns(cols):
        raise ValueError(
            f"unpack_int4: {cols} columns need {packed_columns(cols)} bytes per row, got {packed.shape[1]}"
        )
    out = torch.stack([packed & 0x0F, packed >> 4], dim=2).reshape(packed.shape[0], -1)
    return out[:, :cols]
