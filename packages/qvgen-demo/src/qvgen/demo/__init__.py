"""The `qvgen` command: QVGen end to end on the embedded tiny default."""

__all__: list[str] = []
