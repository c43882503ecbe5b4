"""Quantizers for QVGen: LSQ+ weights, clipped per-token activations, real low-bit export (torchao)."""

__all__: list[str] = []
