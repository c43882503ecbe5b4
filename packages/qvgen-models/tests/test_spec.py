from pathlib import Path

import pytest
import torch
from pydantic import TypeAdapter, ValidationError

from qvgen.models import CogVideoXSpec, ModelSpec, WanSpec, to_torch_dtype

ADAPTER: TypeAdapter[ModelSpec] = TypeAdapter(ModelSpec)


def test_model_spec_dispatches_on_family():
    wan = ADAPTER.validate_python({"family": "wan", "checkpoint": "/ckpt/wan", "dtype": "float32"})
    cog = ADAPTER.validate_python({"family": "cogvideox"})
    assert isinstance(wan, WanSpec) and wan.checkpoint == Path("/ckpt/wan")
    assert isinstance(cog, CogVideoXSpec) and cog.checkpoint is None


def test_wan_spec_defaults_follow_the_official_recipe():
    spec = WanSpec()
    assert (spec.train_flow_shift, spec.sample_flow_shift, spec.dtype) == (1.0, 3.0, "bfloat16")


def test_model_spec_rejects_unknown_family_and_extra_fields():
    with pytest.raises(ValidationError, match="family"):
        ADAPTER.validate_python({"family": "sora"})
    with pytest.raises(ValidationError, match="train_flow_shift"):
        ADAPTER.validate_python({"family": "cogvideox", "train_flow_shift": 1.0})


def test_model_spec_rejects_bad_values():
    with pytest.raises(ValidationError, match="dtype"):
        WanSpec(dtype="int8")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="train_flow_shift"):
        WanSpec(train_flow_shift=0.0)


def test_model_spec_is_frozen_and_round_trips_through_json():
    spec = WanSpec(checkpoint=Path("/x"), max_text_length=64)
    with pytest.raises(ValidationError):
        spec.dtype = "float32"  # type: ignore[misc]
    assert ADAPTER.validate_json(ADAPTER.dump_json(spec)) == spec


def test_to_torch_dtype_maps_names_and_rejects_unknown():
    assert to_torch_dtype("bfloat16") is torch.bfloat16
    assert to_torch_dtype(torch.float16) is torch.float16
    with pytest.raises(ValueError, match="float32"):
        to_torch_dtype("fp8")  # type: ignore[arg-type]
