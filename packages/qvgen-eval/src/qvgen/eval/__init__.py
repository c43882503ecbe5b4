"""Sampling quantized video DiTs, offline fidelity metrics, VBench adapter and HTML report."""

__all__: list[str] = []
