"""QVGen's auxiliary low-rank modules (Phi) and the rank-decay schedule."""

__all__: list[str] = []
