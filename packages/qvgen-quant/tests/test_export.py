"""convert_, save_quantized / load_quantized, and deploy-vs-fake equivalence on the tiny Wan and CogVideoX.

Tolerance as in test_deploy.py: exact integer GEMM and identical activation codes, float32 rounding left.
"""

import json
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from qvgen.core import MARKER_NAME, seal_manifest
from qvgen.quant import (
    ClippedDynamicActivation,
    LSQPlusWeight,
    QuantConfig,
    QuantLinear,
    initialize_,
    prepare_,
    set_timesteps_,
)
from qvgen.quant.deploy import DeployLinear
from qvgen.quant.export import convert_, deployed_layers, load_quantized, save_quantized
from qvgen.quant.manifest import MANIFEST_FILE, TENSORS_FILE, DeployManifest

REL_TOL_VS_FAKE = 1e-5


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


class TinyBlock(nn.Module):
    """Stand-in transformer: timestep-conditioned MLP with a norm that stays high precision."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(64)
        self.up = nn.Linear(64, 128)
        self.down = nn.Linear(128, 64, bias=False)
        self.out = nn.Linear(64, 32)

    def forward(self, x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        return self.out(self.down(torch.relu(self.up(self.norm(x)))))


def randomize_trained_state_(model: nn.Module) -> None:
    """Move zero points off the integer grid and clip factors off their init, as training would."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, QuantLinear):
                m.weight_quantizer.zero_point.add_(torch.rand_like(m.weight_quantizer.zero_point) - 0.5)
                m.act_quantizer.clip_logit_lo.uniform_(0.5, 4.0)
                m.act_quantizer.clip_logit_hi.uniform_(0.5, 4.0)


def prepared_tiny(cfg: QuantConfig | None = None) -> TinyBlock:
    model = TinyBlock()
    prepare_(model, cfg or QuantConfig.w4a4(), keep_high_precision=("out",))
    initialize_(model, progress=False)
    randomize_trained_state_(model)
    return model


T = torch.tensor([30.0, 640.0])


def test_convert_replaces_every_quant_linear_and_keeps_outputs() -> None:
    model = prepared_tiny()
    x = torch.randn(2, 10, 64)
    with torch.no_grad():
        fake = model(x, T)
    converted = convert_(model)
    assert sorted(converted) == ["down", "up"]
    assert not any(isinstance(m, QuantLinear) for m in model.modules())
    assert isinstance(model.out, nn.Linear) and not isinstance(model.out, DeployLinear)
    with torch.no_grad():
        out = model(x, T)
    assert rel_err(out, fake) <= 1e-4  # two layers: a float ulp may move one activation code downstream


def test_convert_names_layer_that_still_has_lowrank_branch() -> None:
    model = prepared_tiny()
    model.down.lowrank = nn.Identity()  # type: ignore[union-attr]
    with pytest.raises(ValueError, match=r"layer 'down'.*auxiliary branch"):
        convert_(model)
    assert isinstance(model.up, QuantLinear)  # nothing converted when one layer is refused


@pytest.mark.parametrize("target", ["W4A4", "int8"])
def test_convert_refuses_an_unknown_target_instead_of_dropping_activation_quantization(target: str) -> None:
    model = prepared_tiny()
    with pytest.raises(ValueError, match=rf"layer 'up': deploy target '{target}' is not one of"):
        convert_(model, target=target)  # type: ignore[arg-type]
    assert isinstance(model.up, QuantLinear)


def test_convert_refuses_model_without_quant_layers() -> None:
    with pytest.raises(ValueError, match="prepare_"):
        convert_(TinyBlock())


def saved_tiny(tmp_path: Path) -> tuple[TinyBlock, Path]:
    model = prepared_tiny(
        QuantConfig(
            weight=LSQPlusWeight(bits=3), activation=ClippedDynamicActivation(bits=4, group_mode="mod")
        )
    )
    convert_(model)
    save_quantized(model, tmp_path, identity="tiny-run-7")
    return model, tmp_path


def test_save_then_load_reproduces_outputs_and_state_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, folder = saved_tiny(tmp_path)

    def no_unpickling(*args: object, **kwargs: object) -> None:
        raise AssertionError("load_quantized must not unpickle")

    monkeypatch.setattr(pickle, "loads", no_unpickling)
    monkeypatch.setattr(torch, "load", no_unpickling)
    loaded = load_quantized(TinyBlock(), folder)
    assert sorted(deployed_layers(loaded)) == ["down", "up"]
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    x = torch.randn(2, 10, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x, T), model(x, T))


def test_save_quantized_writes_manifest_with_layers_bits_shapes_roles(tmp_path: Path) -> None:
    _, folder = saved_tiny(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == [MARKER_NAME, TENSORS_FILE, MANIFEST_FILE]  # no temps
    manifest = DeployManifest.model_validate_json((folder / MANIFEST_FILE).read_text())
    assert manifest.schema_version == 1
    assert manifest.tensors_bytes == (folder / TENSORS_FILE).stat().st_size
    assert manifest.source.class_name == "TinyBlock" and manifest.source.identity == "tiny-run-7"
    up = manifest.layer("up")
    assert (up.in_features, up.out_features, up.bias, up.weight_bits, up.act_bits) == (64, 128, True, 3, 4)
    assert up.role == "other" and up.act_group_mode == "mod" and up.target == "w4a4"
    assert [entry.name for entry in manifest.layers] == ["up", "down"]


def test_save_quantized_refuses_model_that_was_not_converted(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="convert_"):
        save_quantized(prepared_tiny(), tmp_path)


def test_load_refuses_truncated_tensors_file(tmp_path: Path) -> None:
    _, folder = saved_tiny(tmp_path)
    path = folder / TENSORS_FILE
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=rf"{TENSORS_FILE}.*truncated"):
        load_quantized(TinyBlock(), folder)
    # same size recorded in the manifest: the safetensors reader itself refuses it
    manifest_path = folder / MANIFEST_FILE
    raw = json.loads(manifest_path.read_text())
    raw["tensors_bytes"] = len(data) // 2
    manifest_path.write_text(json.dumps(seal_manifest(raw)))  # sealed again: reach the tensors check
    with pytest.raises(ValueError, match=rf"{TENSORS_FILE}.*(truncated|corrupt)"):
        load_quantized(TinyBlock(), folder)


def edit_manifest(folder: Path, layer: str, **changes: object) -> None:
    path = folder / MANIFEST_FILE
    raw = json.loads(path.read_text())
    for entry in raw["layers"]:
        if entry["name"] == layer:
            entry.update(changes)
    path.write_text(json.dumps(seal_manifest(raw)))  # sealed again: reach the checks against the tensors


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"in_features": 32}, r"layer 'down'.*weight_packed"),
        ({"bias": True}, r"layer 'down'.*missing \['bias'\]"),
        ({"weight_bits": 2}, r"layer 'down'.*exceeds the manifest's 2 bits"),
        ({"act_groups": 7}, r"layer 'down'.*clip_logit_lo"),
        ({"name": "nowhere"}, r"layer 'nowhere'.*missing"),
    ],
)
def test_load_refuses_manifest_that_disagrees_with_tensors(
    tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    _, folder = saved_tiny(tmp_path)
    edit_manifest(folder, "down", **changes)
    with pytest.raises(ValueError, match=message) as info:
        load_quantized(TinyBlock(), folder)
    assert TENSORS_FILE in str(info.value)


def test_load_refuses_invalid_manifest_naming_the_file(tmp_path: Path) -> None:
    _, folder = saved_tiny(tmp_path)
    raw = json.loads((folder / MANIFEST_FILE).read_text())
    raw["schema_version"] = 2
    (folder / MANIFEST_FILE).write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=rf"(?s){MANIFEST_FILE}: invalid deploy manifest.*schema_version"):
        load_quantized(TinyBlock(), folder)


@pytest.mark.parametrize("name", ["../elsewhere/model.safetensors", "/tmp/model.safetensors", ".."])
def test_load_refuses_a_manifest_whose_tensors_file_is_a_path(tmp_path: Path, name: str) -> None:
    _, folder = saved_tiny(tmp_path)
    raw = json.loads((folder / MANIFEST_FILE).read_text())
    raw["tensors_file"] = name
    (folder / MANIFEST_FILE).write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=rf"(?s){MANIFEST_FILE}: invalid deploy manifest.*tensors_file"):
        load_quantized(TinyBlock(), folder)


class TinyBlockWithExtra(TinyBlock):
    def __init__(self) -> None:
        super().__init__()
        self.extra = nn.Linear(4, 4)


def test_a_refused_load_leaves_the_callers_model_untouched(tmp_path: Path) -> None:
    _, folder = saved_tiny(tmp_path)
    raw = json.loads((folder / MANIFEST_FILE).read_text())
    raw["source"]["class_name"] = "TinyBlockWithExtra"
    (folder / MANIFEST_FILE).write_text(json.dumps(seal_manifest(raw)))
    target = TinyBlockWithExtra()
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(
        ValueError, match=r"outside the manifest's layers \(missing \['extra.bias', 'extra.weight'\]"
    ):
        load_quantized(target, folder)
    assert not deployed_layers(target)
    assert type(target.up) is nn.Linear
    after = target.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], v) for k, v in before.items())


def test_load_refuses_model_of_another_class(tmp_path: Path) -> None:
    _, folder = saved_tiny(tmp_path)
    with pytest.raises(ValueError, match="saved from a TinyBlock"):
        load_quantized(nn.Sequential(nn.Linear(64, 128)), folder)


def test_w4a16_round_trip(tmp_path: Path) -> None:
    model = prepared_tiny()
    convert_(model, target="w4a16")
    save_quantized(model, tmp_path)
    loaded = load_quantized(TinyBlock(), tmp_path)
    assert {m.target for m in deployed_layers(loaded).values()} == {"w4a16"}
    x = torch.randn(2, 10, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x, T), model(x, T))


# --- every Linear of the tiny Wan and CogVideoX -----------------------------------------------------

WAN_TINY = dict(
    patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=64, in_channels=16, out_channels=16,
    text_dim=64, freq_dim=256, ffn_dim=256, num_layers=2, cross_attn_norm=True,
    qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=32,
)  # fmt: skip
COG_TINY = dict(
    num_attention_heads=2, attention_head_dim=64, in_channels=16, out_channels=16, time_embed_dim=64,
    text_embed_dim=64, num_layers=2, sample_width=8, sample_height=8, sample_frames=9, patch_size=2,
    temporal_compression_ratio=4, max_text_seq_length=16, use_rotary_positional_embeddings=False,
)  # fmt: skip


def tiny_transformer(family: str) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    diffusers = pytest.importorskip("diffusers")
    if family == "wan":
        model = diffusers.WanTransformer3DModel(**WAN_TINY)
        inputs = dict(
            hidden_states=torch.randn(2, 16, 3, 8, 8),  # (B, C, F, H, W)
            timestep=torch.tensor([120.0, 870.0]),
            encoder_hidden_states=torch.randn(2, 16, 64),
        )
    else:
        model = diffusers.CogVideoXTransformer3DModel(**COG_TINY)
        inputs = dict(
            hidden_states=torch.randn(2, 3, 16, 8, 8),  # (B, F, C, H, W)
            timestep=torch.tensor([120, 870]),
            encoder_hidden_states=torch.randn(2, 16, 64),
        )
    return model.eval(), inputs


@pytest.mark.parametrize("family", ["wan", "cogvideox"])
def test_deploy_matches_fake_quant_on_every_linear_of_tiny_model(family: str, tmp_path: Path) -> None:
    model, inputs = tiny_transformer(family)
    n_linear = sum(isinstance(m, nn.Linear) for m in model.modules())
    prepare_(model, QuantConfig.w4a4())
    initialize_(model, progress=False)
    randomize_trained_state_(model)
    layers = {name: m for name, m in model.named_modules() if isinstance(m, QuantLinear)}
    assert len(layers) == n_linear
    captured: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def capture(name: str) -> object:
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            captured[name] = (args[0], out)

        return hook

    hooks = [m.register_forward_hook(capture(name)) for name, m in layers.items()]  # type: ignore[arg-type]
    with torch.no_grad():
        fake_out = model(**inputs)[0]
    for h in hooks:
        h.remove()
    assert sorted(captured) == sorted(layers)
    float_form = {name: layers[name](x).detach() for name, (x, _) in captured.items()}  # with gradients
    converted = convert_(model)
    assert sorted(converted) == sorted(layers)
    set_timesteps_(model, inputs["timestep"])
    with torch.no_grad():
        for name, deploy in converted.items():
            x, fake = captured[name]
            assert torch.equal(deploy(x), fake), name
            assert rel_err(deploy(x), float_form[name]) <= REL_TOL_VS_FAKE, name
        out = model(**inputs)[0]
    assert torch.isfinite(out).all()
    # the fake-quant model at inference runs the deploy arithmetic: the whole transformer agrees bit for bit
    assert torch.equal(out, fake_out)
    save_quantized(model, tmp_path, identity=f"tiny-{family}")
    fresh, _ = tiny_transformer(family)
    loaded = load_quantized(fresh, tmp_path)
    with torch.no_grad():
        assert torch.equal(loaded(**inputs)[0], out)
