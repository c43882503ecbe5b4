"""Wan 2.1 and CogVideoX model families for qvgen: loading, layer roles, noising, tiny offline builds."""

__all__: list[str] = []
