"""Layer-role coverage on the real Wan2.1-T2V-1.3B and CogVideoX-2B configs (meta device) and the tiny ones."""

from collections import Counter
from fnmatch import fnmatchcase

import pytest
from torch import nn

from qvgen.models import FAMILIES, roles_of
from qvgen.quant import LayerRole, QuantConfig, QuantLinear, prepare_

R = LayerRole
# Expected from the architectures (docs/method.md §2.2): every Linear is quantized in the official recipe.
REAL_ROLE_COUNTS = {
    "wan": {
        R.time_embed: 2, R.modulation: 1, R.text_proj: 2,
        R.attn_q: 30, R.attn_k: 30, R.attn_v: 30, R.attn_out: 30,
        R.cross_q: 30, R.cross_k: 30, R.cross_v: 30, R.cross_out: 30,
        R.ffn_up: 30, R.ffn_down: 30, R.proj_out: 1,
    },
    "cogvideox": {
        R.text_proj: 1, R.time_embed: 2, R.modulation: 61,
        R.attn_q: 30, R.attn_k: 30, R.attn_v: 30, R.attn_out: 30,
        R.ffn_up: 30, R.ffn_down: 30, R.proj_out: 1,
    },
}  # fmt: skip
REAL_LINEARS = {"wan": 306, "cogvideox": 245}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def real_meta(request):
    family = FAMILIES[request.param]
    return request.param, family.build_transformer_on_meta()


def test_real_config_builds_on_meta_without_memory(real_meta):
    _, model = real_meta
    params = list(model.parameters())
    assert params and all(p.is_meta for p in params)
    assert sum(p.numel() for p in params) > 1.0e9


def test_every_linear_of_the_real_config_gets_its_expected_role(real_meta):
    name, model = real_meta
    roles = roles_of(model, name)
    n_linear = sum(isinstance(m, nn.Linear) for m in model.modules())
    assert len(roles) == n_linear == REAL_LINEARS[name]
    assert [n for n, r in roles.items() if r is LayerRole.other] == []
    assert dict(Counter(roles.values())) == REAL_ROLE_COUNTS[name]
    print(
        f"\n{name}: {n_linear} linears: "
        + ", ".join(f"{r.value}={c}" for r, c in Counter(roles.values()).items())
    )


def test_no_module_name_matches_globs_of_two_roles(real_meta):
    name, model = real_meta
    table = FAMILIES[name].layer_roles
    fused = [f"{n}.to_qkv" for n, m in model.named_modules() if n.endswith("attn1")]
    fused += [f"{n}.to_kv" for n, m in model.named_modules() if n.endswith("attn2")]
    for module_name in [n for n, m in model.named_modules() if isinstance(m, nn.Linear)] + fused:
        roles = {role for glob, role in table.items() if fnmatchcase(module_name, glob)}
        assert len(roles) == 1, (module_name, roles)


def test_every_glob_of_the_table_matches_a_real_or_fused_module(real_meta):
    name, model = real_meta
    fam = FAMILIES[name]
    model_names = [n for n, _ in model.named_modules()]
    model_names += [f"{n}.to_qkv" for n in model_names if n.endswith("attn1")]
    model_names += [f"{n}.to_kv" for n in model_names if n.endswith("attn2")]
    unused = [g for g in fam.layer_roles if not any(fnmatchcase(n, g) for n in model_names)]
    # ofs_embedding exists only in CogVideoX 1.5; every other glob must be live.
    assert unused in ([], ["ofs_embedding.linear_*"])


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_fused_qkv_projections_keep_a_role(name):
    model = FAMILIES[name].build_tiny_components().transformer
    model.fuse_qkv_projections()
    roles = roles_of(model, name)
    assert LayerRole.other not in roles.values()
    assert roles["proj_out"] is LayerRole.proj_out
    prefix = "blocks" if name == "wan" else "transformer_blocks"
    assert roles[f"{prefix}.0.attn1.to_qkv"] is LayerRole.attn_qkv
    if name == "wan":
        assert roles["blocks.1.attn2.to_kv"] is LayerRole.cross_kv


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_quant_prepare_with_the_family_table_assigns_the_same_roles(name):
    fam = FAMILIES[name]
    model = fam.build_tiny_components().transformer
    expected = roles_of(model, fam)
    prepare_(model, QuantConfig(), layer_roles=fam.layer_roles, keep_high_precision=fam.keep_high_precision)
    swapped = {n: m.role for n, m in model.named_modules() if isinstance(m, QuantLinear)}
    assert swapped == expected
    assert not any(type(m) is nn.Linear for m in model.modules())


def test_roles_of_accepts_a_family_object_or_name():
    model = FAMILIES["wan"].build_tiny_components().transformer
    assert roles_of(model, "wan") == roles_of(model, FAMILIES["wan"])
    with pytest.raises(KeyError, match="known families"):
        roles_of(model, "mochi")
