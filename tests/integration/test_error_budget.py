"""benchmarks/error_budget.py measures what its rows say (on the embedded teacher, two held-out clips)."""

from __future__ import annotations

import pytest
import torch

from qvgen.demo import DEFAULT_TEACHER_DIR
from qvgen.models import get_family


@pytest.fixture(scope="module")
def error_budget(import_benchmark):
    return import_benchmark("error_budget")


def test_rows_split_the_error_and_full_rank_phi_removes_the_weights_share(error_budget, tmp_path):
    torch.set_num_threads(1)
    family = get_family("wan")
    teacher = family.load_transformer(DEFAULT_TEACHER_DIR).eval().requires_grad_(False)
    batches = error_budget.held_out_inputs(DEFAULT_TEACHER_DIR, tmp_path, clips=2, timesteps=1)
    with torch.no_grad():
        targets = [family.predict(teacher, *b) for b in batches]
    assert error_budget.relative_errors(teacher, teacher, batches, targets) == [0.0, 0.0]

    def error(row) -> float:
        student = error_budget.quantized_student(teacher, row, family)
        return sum(error_budget.relative_errors(student, teacher, batches, targets)) / 2

    Row = error_budget.Row
    w4a4, w4a16, w8a16 = error(Row(4, 4)), error(Row(4, None)), error(Row(8, None))
    assert 0 < w8a16 < w4a16 < w4a4
    assert error(Row(4, None, phi_rank=1024)) < 1e-8  # Φ = the whole SVD of W − Q(W): the weights are exact
    assert Row(4, 4, 8).label == "W4A4 + Φ r=8 at init" and Row(8, None).label == "W8A16"

    shares = error_budget.spectrum_shares(
        error_budget.quantized_student(teacher, Row(4, 4), family), (8, 4096)
    )
    assert all(0 < s < 1 for s in shares["error_r8"]) and all(0 < s < 1 for s in shares["gauss_r8"])
    assert shares["error_r4096"] == pytest.approx([1.0] * len(shares["error_r8"]))
