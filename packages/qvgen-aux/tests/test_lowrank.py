import pytest
import torch

from qvgen.auxiliary import LowRankBranch, PhiGroup, balanced_factors, resvd_factors


def _truncated_svd(E: torch.Tensor, r: int) -> torch.Tensor:
    U, S, Vh = torch.linalg.svd(E.double(), full_matrices=False)
    return (U[:, :r] * S[:r]) @ Vh[:r]


def test_balanced_factors_give_the_truncated_svd_with_balanced_descending_columns():
    E = torch.randn(48, 80)
    L, R = balanced_factors(E, 12)
    assert L.shape == (48, 12) and R.shape == (12, 80) and L.dtype == torch.float32
    torch.testing.assert_close((L @ R).double(), _truncated_svd(E, 12), atol=1e-5, rtol=0)
    col, row = L.norm(dim=0), R.norm(dim=1)
    torch.testing.assert_close(col, row)  # √Σ on both sides
    assert torch.all(col[:-1] >= col[1:])


def test_balanced_factors_clip_rank_to_the_smaller_dimension():
    L, R = balanced_factors(torch.randn(16, 64), 32)
    assert L.shape == (16, 16) and R.shape == (16, 64)


def test_balanced_factors_compute_in_float32_for_bf16_input():
    L, R = balanced_factors(torch.randn(16, 32).bfloat16(), 4)
    assert L.dtype == R.dtype == torch.float32


def test_resvd_factors_keep_the_product_and_sort_its_directions():
    L = torch.randn(64, 8) @ torch.diag(torch.tensor([0.1, 3.0, 0.5, 2.0, 1.0, 0.2, 4.0, 0.3]))
    R = torch.randn(8, 40)
    L2, R2 = resvd_factors(L, R)
    torch.testing.assert_close(L2 @ R2, L @ R, atol=1e-5, rtol=1e-5)
    col = L2.norm(dim=0)
    assert torch.all(col[:-1] >= col[1:])
    torch.testing.assert_close(col, R2.norm(dim=1))


def test_resvd_factors_are_deterministic_and_follow_the_reference_signs():
    L, R = balanced_factors(torch.randn(32, 24), 6)
    a = resvd_factors(L, R, like=L)
    b = resvd_factors(L.clone(), R.clone(), like=L)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    # already balanced and sorted: the re-SVD returns the same columns, not sign-flipped ones
    torch.testing.assert_close(a[0], L, atol=1e-5, rtol=1e-4)
    flipped = resvd_factors(L, R, like=-L)[0]
    torch.testing.assert_close(flipped, -L, atol=1e-5, rtol=1e-4)


def test_low_rank_branch_forward_is_l_diag_gamma_r():
    L, R = torch.randn(20, 4), torch.randn(4, 30)
    group = PhiGroup(8)
    branch = LowRankBranch(L, R, group)
    group.values.copy_(torch.tensor([1.0, 0.5, 0.25, 0.0, 9, 9, 9, 9]))
    expected = L @ torch.diag(torch.tensor([1.0, 0.5, 0.25, 0.0])) @ R
    torch.testing.assert_close(branch(), expected)
    assert torch.equal(branch.gamma, group.values[:4])
    assert branch.width == 4
    assert set(dict(branch.named_parameters())) == {"L", "R"} and dict(branch.named_buffers()) == {}


def test_low_rank_branch_is_float32_under_autocast():
    branch = LowRankBranch(torch.randn(20, 4), torch.randn(4, 30), PhiGroup(4))
    expected = branch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        phi = branch()
    assert phi.dtype == torch.float32 and torch.equal(phi, expected)


def test_low_rank_branch_stores_float32_masters_and_copies_its_inputs():
    L = torch.randn(6, 2, dtype=torch.bfloat16)
    branch = LowRankBranch(L, torch.randn(2, 5))
    assert branch.L.dtype == torch.float32
    with torch.no_grad():
        branch.L.zero_()
    assert L.abs().sum() > 0


def test_low_rank_branch_rejects_mismatched_factors():
    with pytest.raises(ValueError, match=r"need L \[out, r\] and R \[r, in\]"):
        LowRankBranch(torch.randn(6, 3), torch.randn(2, 5))
    with pytest.raises(ValueError, match="γ has 2 entries < width 3"):
        LowRankBranch(torch.randn(6, 3), torch.randn(3, 5), PhiGroup(2))


def test_low_rank_branch_gradients_reach_l_and_r():
    branch = LowRankBranch(torch.randn(6, 3), torch.randn(3, 5))
    branch().square().sum().backward()
    assert branch.L.grad is not None and branch.L.grad.abs().sum() > 0
    assert branch.R.grad is not None and branch.R.grad.abs().sum() > 0
