"""`sampling.attention_backend`: off by default, applied to the transformer, clear errors when unusable."""

import importlib.util

import pytest
from pydantic import ValidationError
from torch import nn

from qvgen.eval.config import SamplingSettings
from qvgen.eval.loading import from_components
from qvgen.eval.sample import pipeline_kwargs, use_attention_backend
from qvgen.models import get_family
from qvgen.models.testing import tiny_checkpoint


def _backends(transformer: nn.Module) -> set[str]:
    return {
        str(getattr(m.processor, "_attention_backend", None))
        for m in transformer.modules()
        if getattr(m, "processor", None) is not None
    }


def test_attention_backend_is_off_by_default_and_validated() -> None:
    assert SamplingSettings().attention_backend is None
    assert SamplingSettings(attention_backend="sage").attention_backend == "sage"
    with pytest.raises(ValidationError, match="attention_backend"):
        SamplingSettings(attention_backend="Sage Attention")


def test_named_backend_is_set_on_every_attention_processor() -> None:
    fam = get_family("wan")
    model = from_components(fam, fam.load(tiny_checkpoint("wan")))
    before = _backends(model.components.transformer)
    pipeline_kwargs(model, SamplingSettings())
    assert _backends(model.components.transformer) == before  # None: nothing changes
    pipeline_kwargs(model, SamplingSettings(attention_backend="native"))
    assert _backends(model.components.transformer) == {"AttentionBackendName.NATIVE"}


@pytest.mark.skipif(importlib.util.find_spec("flash_attn") is not None, reason="flash-attn is installed")
def test_unavailable_or_unknown_backend_is_a_clear_error() -> None:
    fam = get_family("wan")
    transformer = fam.load(tiny_checkpoint("wan")).transformer
    with pytest.raises(ValueError, match=r"sampling\.attention_backend='flash' is not available.*flash-attn"):
        use_attention_backend(transformer, "flash")
    with pytest.raises(ValueError, match=r"sampling\.attention_backend='bogus'.*must be one of"):
        use_attention_backend(transformer, "bogus")
    with pytest.raises(ValueError, match="not a diffusers model"):
        use_attention_backend(nn.Linear(2, 2), "native")
