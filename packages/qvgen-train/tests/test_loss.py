import pytest
import torch

from qvgen.train.loss import distill_loss


def test_distill_loss_is_float32_mse_of_low_precision_inputs():
    a = torch.randn(2, 3, 4).to(torch.bfloat16)
    b = torch.randn(2, 3, 4).to(torch.bfloat16)
    loss = distill_loss(a, b)
    assert loss.dtype == torch.float32
    assert loss == ((a.float() - b.float()) ** 2).mean()


def test_distill_loss_gradient_reaches_the_student_only():
    s = torch.randn(4, 5, requires_grad=True)
    t = torch.randn(4, 5)
    distill_loss(s, t).backward()
    torch.testing.assert_close(s.grad, 2 * (s - t).detach() / s.numel())


def test_distill_loss_rejects_shape_mismatch_and_a_target_with_grad():
    with pytest.raises(ValueError, match="same noisy input"):
        distill_loss(torch.zeros(2, 3), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="no_grad"):
        distill_loss(torch.zeros(2), torch.zeros(2, requires_grad=True))
