"""`QuantLoraLinear`: PEFT's LoRA layer around a low-bit Linear (`DeployLinear` or `QuantLinear`).

Imports peft (the ``qvgen-models[lora]`` extra); `qvgen.models.lora` imports this module only when a LoRA
is loaded. The base layer is never touched while the LoRA is unfused:

    y = base(x) + Σ_a  w_a · (α_a / r_a) · B_a A_a x

with ``x`` the layer's own input (before SVDQuant's smoothing and the activation quantizer), exactly PEFT's
``lora.Linear`` forward. ``merge`` (diffusers' ``fuse_lora``) appends the adapters to the base layer's 16-bit
low-rank slot ``kept`` (SVDQuant's kept branch, or a new one with λ = 1), never to the int4 codes: the branch
sees ``x̂ = x / λ``, so ``A`` becomes ``A · diag(λ)``. The fused factors are float32 (the existing kept factors
upcast exactly), and ``unmerge`` cuts them back off, restoring the kept branch bit for bit (or removing it).
"""

from __future__ import annotations

from typing import Any, cast

import torch
from peft.tuners.lora.layer import Linear as PeftLoraLinear
from peft.tuners.tuners_utils import check_adapters_to_merge

from qvgen.quant import DeployLinear, QuantLinear, SmoothLowRank


class QuantLoraLinear(PeftLoraLinear):
    """PEFT LoRA on a `DeployLinear` / `QuantLinear`; fusing goes into the base layer's ``kept`` branch."""

    def __init__(
        self, base_layer: DeployLinear | QuantLinear, adapter_name: str, config: Any, **kwargs: Any
    ) -> None:
        if getattr(config, "use_dora", False):
            raise ValueError(
                f"{base_layer.label}: DoRA needs the layer's float weight; a low-bit layer takes plain LoRA only"
            )
        super().__init__(base_layer, adapter_name, config=config, **kwargs)
        self._unfused: tuple[int, str] | None = None
        """Before the first merge: (rank, dtype name) of the base's kept branch, or (0, "") when it had none."""

    def _get_in_out_features(self, module: torch.nn.Module) -> tuple[int, int]:
        low_bit = cast(DeployLinear | QuantLinear, module)  # PEFT's generic lookup warns on these types
        return low_bit.in_features, low_bit.out_features

    def _low_bit(self) -> DeployLinear | QuantLinear:
        return cast(DeployLinear | QuantLinear, self.get_base_layer())

    def _factors(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(A `[r, in]`, B `[out, r]`) of adapter ``name``, detached float32."""
        a = cast(torch.nn.Linear, self.lora_A[name]).weight.detach().float()
        b = cast(torch.nn.Linear, self.lora_B[name]).weight.detach().float()
        return a, b

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        names = check_adapters_to_merge(self, adapter_names)
        names = [n for n in names if n in self.lora_A]
        if not names:
            return
        base = self._low_bit()
        for name in names:
            if self.lora_bias.get(name):
                raise ValueError(
                    f"{base.label}: adapter {name!r} has a LoRA bias, which the low-rank branch cannot hold; "
                    "use it unfused"
                )
        kept = base.kept
        device = (kept.smooth if kept is not None else self._factors(names[0])[0]).device
        if self._unfused is None:
            self._unfused = (kept.rank, kept.dtype_name) if kept is not None else (0, "")
        if kept is None:
            kept = SmoothLowRank(base.in_features, base.out_features, 1, device=device)
            downs: list[torch.Tensor] = []
            ups: list[torch.Tensor] = []
        else:
            downs, ups = [kept.down.float()], [kept.up.float()]
        lam = kept.smooth.float()
        with torch.no_grad():
            for name in names:
                a, b = self._factors(name)
                downs.append(a.to(device) * lam[None, :])  # A x = (A diag λ)(x / λ)
                ups.append(b.to(device) * self.scaling[name])
            down, up = torch.cat(downs, dim=0), torch.cat(ups, dim=1)
        if safe_merge and not (torch.isfinite(down).all() and torch.isfinite(up).all()):
            raise ValueError(
                f"{base.label}: NaN/Inf in the fused low-rank branch; adapters {names} look broken"
            )
        kept.down, kept.up, kept.rank = down, up, down.shape[0]
        base.kept = kept
        self.merged_adapters.extend(names)

    def unmerge(self) -> None:
        if not self.merged or self._unfused is None:
            return
        base = self._low_bit()
        rank, dtype_name = self._unfused
        kept = base.kept
        assert kept is not None
        if rank == 0:
            base.kept = None
        else:
            dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}[dtype_name]
            kept.down = kept.down[:rank].to(dtype).contiguous()
            kept.up = kept.up[:, :rank].to(dtype).contiguous()
            kept.rank = rank
        self._unfused = None
        self.merged_adapters.clear()

    def __repr__(self) -> str:
        return "qvgen." + super().__repr__()


LORA_BASE_LAYERS: dict[type[torch.nn.Module], type[torch.nn.Module]] = {
    DeployLinear: QuantLoraLinear,
    QuantLinear: QuantLoraLinear,
}
"""PEFT custom-module mapping (`LoraConfig._register_custom_module`): low-bit layer type → its LoRA layer."""
