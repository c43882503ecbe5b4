"""Shared pytest setup for every package's tests: one CPU thread, offline hub, fixed seed."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest

try:
    import torch
except ImportError:  # qvgen-core's test venv has no torch (pydantic + PyYAML only)
    torch = None  # type: ignore[assignment]

if torch is not None:
    # Two intra-op threads on this shared 2-core machine run 10-30x slower than one.
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    if torch is not None:
        torch.manual_seed(0)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch is None or torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
