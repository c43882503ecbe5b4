"""`roles_of`: the `LayerRole` of every `nn.Linear` in a transformer, from its family's glob table."""

from __future__ import annotations

from torch import nn

from qvgen.models.family import ModelFamily
from qvgen.quant import LayerRole, resolve_role


def roles_of(transformer: nn.Module, family: ModelFamily | str) -> dict[str, LayerRole]:
    """``{module name: role}`` for every `nn.Linear` (subclasses included) in `transformer`.

    Resolution is qvgen.quant's own (`resolve_role`), so this is exactly what `prepare_` will see.
    """
    if isinstance(family, str):
        from qvgen.models.registry import get_family

        family = get_family(family)
    return {
        name: resolve_role(name, family.layer_roles)
        for name, module in transformer.named_modules()
        if isinstance(module, nn.Linear)
    }
