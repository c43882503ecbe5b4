"""The only module that touches torchao private names (they move between releases; pin in one place)."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor
from torchao.quantization.quant_primitives import _Round

# Straight-through rounding: forward torch.round, backward identity (torchao's QAT range-learning op).
ste_round: Callable[[Tensor], Tensor] = _Round.apply
