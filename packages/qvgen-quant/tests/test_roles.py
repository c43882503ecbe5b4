from qvgen.quant import LayerRole, matches_any, resolve_role


def test_resolve_role_takes_first_matching_glob_in_mapping_order() -> None:
    roles = {"blocks.*.attn1.to_q": LayerRole.attn_q, "blocks.*.attn1.*": LayerRole.attn_out}
    assert resolve_role("blocks.3.attn1.to_q", roles) is LayerRole.attn_q
    assert resolve_role("blocks.3.attn1.to_out.0", roles) is LayerRole.attn_out


def test_resolve_role_falls_back_to_other() -> None:
    assert resolve_role("proj_out", {"blocks.*": LayerRole.ffn_up}) is LayerRole.other
    assert resolve_role("proj_out", {}) is LayerRole.other


def test_resolve_role_accepts_fused_and_unfused_names_with_one_glob() -> None:
    roles = {"blocks.*.attn1.to_q*": LayerRole.attn_qkv}
    assert resolve_role("blocks.0.attn1.to_qkv", roles) is LayerRole.attn_qkv
    assert resolve_role("blocks.0.attn1.to_q", roles) is LayerRole.attn_qkv


def test_matches_any_is_case_sensitive_fnmatch() -> None:
    assert matches_any("blocks.1.ffn.net.2", ["blocks.*.ffn.*"])
    assert not matches_any("blocks.1.FFN.net.2", ["blocks.*.ffn.*"])
    assert not matches_any("proj_out", [])


def test_layer_role_values_are_the_contract_names() -> None:
    assert [r.value for r in LayerRole] == [
        "attn_q", "attn_k", "attn_v", "attn_qkv", "attn_out", "cross_q", "cross_k", "cross_v", "cross_kv",
        "cross_out", "ffn_up", "ffn_down", "time_embed", "modulation", "text_proj", "proj_out", "patch_embed",
        "image_k", "image_v", "image_kv", "image_proj", "other",
    ]  # fmt: skip
