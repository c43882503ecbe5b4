import pytest
from pydantic import TypeAdapter, ValidationError

from qvgen.quant import (
    ClippedDynamicActivation,
    LayerRole,
    LSQPlusWeight,
    MinMaxWeight,
    NoActivationQuant,
    QuantConfig,
    RoleOverride,
)


@pytest.mark.parametrize(
    "cfg",
    [
        QuantConfig.w4a4(),
        QuantConfig.w3a3(),
        QuantConfig.w4a16(),
        QuantConfig.rtn_w4a4(),
        QuantConfig(
            weight=LSQPlusWeight(bits=3, grid=50, max_shrink=0.5, norm=2.0, grad_scaling=False),
            activation=ClippedDynamicActivation(bits=6, groups=10, group_mode="mod", clip_init=0.95),
            keep_high_precision=("proj_out", "blocks.*.attn2.*"),
            role_overrides={
                LayerRole.time_embed: RoleOverride(skip=True),
                LayerRole.ffn_down: RoleOverride(act_bits=8),
            },
        ),
    ],
)
def test_quant_config_round_trips_through_json_and_python_dicts(cfg: QuantConfig) -> None:
    assert QuantConfig.model_validate_json(cfg.model_dump_json()) == cfg
    assert QuantConfig.model_validate(cfg.model_dump(mode="json")) == cfg


def test_quant_config_parses_yaml_style_dict_with_string_roles_and_kinds() -> None:
    cfg = QuantConfig.model_validate(
        {
            "weight": {"kind": "minmax", "bits": 3},
            "activation": {"kind": "none"},
            "role_overrides": {"modulation": {"skip": True}, "ffn_up": {"weight_bits": 8}},
        }
    )
    assert cfg.weight == MinMaxWeight(bits=3)
    assert cfg.activation == NoActivationQuant()
    assert cfg.is_skipped(LayerRole.modulation) and not cfg.is_skipped(LayerRole.ffn_up)
    assert cfg.for_role(LayerRole.ffn_up)[0] == MinMaxWeight(bits=8)


def test_quant_config_defaults_match_the_reference_recipe() -> None:
    cfg = QuantConfig()
    assert cfg == QuantConfig.w4a4()
    assert cfg.weight == LSQPlusWeight(bits=4, grid=100, max_shrink=0.8, norm=2.4, grad_scaling=True)
    assert cfg.activation == ClippedDynamicActivation(bits=4, groups=50, group_mode="bin", clip_init=0.9025)


def test_quant_config_without_kind_means_the_default_variant() -> None:
    cfg = QuantConfig.model_validate({"weight": {"bits": 3}, "activation": {"bits": 8, "group_mode": "mod"}})
    assert cfg.weight == LSQPlusWeight(bits=3)
    assert cfg.activation == ClippedDynamicActivation(bits=8, group_mode="mod")


@pytest.mark.parametrize("bits", [1, 9, 0])
def test_quant_config_rejects_bits_outside_2_to_8(bits: int) -> None:
    with pytest.raises(ValidationError, match="bits"):
        QuantConfig.model_validate({"weight": {"kind": "lsq_plus", "bits": bits}})
    with pytest.raises(ValidationError, match="bits"):
        QuantConfig.model_validate({"activation": {"kind": "clipped_dynamic", "bits": bits}})
    with pytest.raises(ValidationError, match="act_bits"):
        RoleOverride(act_bits=bits)


def test_quant_config_rejects_unknown_kind_and_extra_fields() -> None:
    with pytest.raises(ValidationError, match="kind"):
        QuantConfig.model_validate({"weight": {"kind": "gptq"}})
    with pytest.raises(ValidationError, match="groupsize"):
        QuantConfig.model_validate({"activation": {"kind": "clipped_dynamic", "groupsize": 4}})
    with pytest.raises(ValidationError, match="group_mode"):
        ClippedDynamicActivation.model_validate({"group_mode": "counter"})


def test_quant_config_rejects_unknown_role_in_overrides() -> None:
    with pytest.raises(ValidationError, match="role_overrides"):
        QuantConfig.model_validate({"role_overrides": {"attention": {"skip": True}}})


@pytest.mark.parametrize("clip_init", [0.0, 1.0, 1.5])
def test_activation_config_rejects_clip_init_without_a_finite_logit(clip_init: float) -> None:
    with pytest.raises(ValidationError, match="clip_init"):
        ClippedDynamicActivation(clip_init=clip_init)


def test_lsq_config_rejects_search_without_candidates() -> None:
    with pytest.raises(ValidationError, match=r"max_shrink=0\.005 with grid=100"):
        LSQPlusWeight(max_shrink=0.005)


def test_role_override_rejects_skip_combined_with_bits() -> None:
    with pytest.raises(ValidationError, match="skip=True cannot be combined with weight_bits/act_bits"):
        RoleOverride(skip=True, weight_bits=8)


def test_quant_config_rejects_act_bits_override_without_activation_quant() -> None:
    with pytest.raises(ValidationError, match=r"\['ffn_down'\] set act_bits but activation.kind is 'none'"):
        QuantConfig(
            activation=NoActivationQuant(), role_overrides={LayerRole.ffn_down: RoleOverride(act_bits=8)}
        )


def test_quant_config_is_frozen() -> None:
    cfg = QuantConfig()
    with pytest.raises(ValidationError, match="frozen"):
        cfg.keep_high_precision = ("x",)  # type: ignore[misc]


def test_for_role_applies_only_that_roles_bits() -> None:
    cfg = QuantConfig(role_overrides={LayerRole.attn_q: RoleOverride(weight_bits=8, act_bits=6)})
    w, a = cfg.for_role(LayerRole.attn_q)
    assert (w.bits, a.bits) == (8, 6)
    assert isinstance(w, LSQPlusWeight) and w.norm == 2.4
    w, a = cfg.for_role(LayerRole.attn_k)
    assert (w.bits, a.bits) == (4, 4)


def test_quant_config_json_schema_names_both_weight_variants() -> None:
    schema = TypeAdapter(QuantConfig).json_schema()
    text = str(schema)
    assert "lsq_plus" in text and "minmax" in text and "clipped_dynamic" in text
