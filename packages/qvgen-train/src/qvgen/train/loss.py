"""The distillation objective: plain MSE in float32 (docs/method.md §7.1)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def distill_loss(student: Tensor, target: Tensor) -> Tensor:
    """Mean squared error between the student's output and its target, computed in float32.

    The target is the frozen teacher's output on the same noisy input (the QVGen objective) or the
    family's data target; for both Wan (flow) and CogVideoX (v) the weighted reference loss reduces to
    this plain MSE on the raw transformer outputs (docs/method.md §7.1).
    """
    if student.shape != target.shape:
        raise ValueError(
            f"student output {tuple(student.shape)} and target {tuple(target.shape)} differ in shape; "
            "the teacher and student must see the same noisy input"
        )
    if target.requires_grad:
        raise ValueError("the distillation target requires grad; run the teacher under torch.no_grad()")
    return F.mse_loss(student.float(), target.float())
