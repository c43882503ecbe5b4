"""`load_quantized(directory)`: the model rebuilt from the manifest's class + config, parameters on meta."""

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from qvgen.core import seal_manifest
from qvgen.quant import QuantConfig, convert_, initialize_, load_quantized, prepare_, save_quantized
from qvgen.quant.deploy import DeployLinear
from qvgen.quant.manifest import MANIFEST_FILE
from qvgen.quant.skeleton import build_empty, meta_tensors, parameters_on_meta

WAN_TINY = dict(
    num_layers=2, num_attention_heads=2, attention_head_dim=64, text_dim=64, ffn_dim=256, freq_dim=256,
    rope_max_seq_len=32,
)  # fmt: skip
COG_TINY = dict(
    num_attention_heads=2, attention_head_dim=64, in_channels=16, out_channels=16, time_embed_dim=64,
    text_embed_dim=64, num_layers=2, sample_width=8, sample_height=8, sample_frames=9, patch_size=2,
    temporal_compression_ratio=4, max_text_seq_length=16,
)  # fmt: skip


class Block(nn.Module):
    """A config-built stand-in: `width` is its one constructor argument, recorded as `config`."""

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.config = {"width": width}
        self.norm = nn.LayerNorm(width)
        self.up = nn.Linear(width, 2 * width)
        self.down = nn.Linear(2 * width, width)
        self.register_buffer("table", torch.arange(4.0), persistent=False)  # rebuilt, not loaded

    def forward(self, x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        return self.down(torch.relu(self.up(self.norm(x)))) + self.table.sum()


def saved_block(folder: Path, width: int = 32) -> Block:
    model = Block(width)
    prepare_(model, QuantConfig.w4a4())
    initialize_(model, progress=False)
    convert_(model)
    save_quantized(model, folder)
    return model


def test_parameters_on_meta_moves_parameters_only_and_restores_registration() -> None:
    with parameters_on_meta():
        m = Block(16)
    assert all(p.device.type == "meta" for p in m.parameters())
    assert m.table.device.type == "cpu" and torch.equal(m.table, torch.arange(4.0))
    assert sorted(meta_tensors(m)) == sorted(n for n, _ in m.named_parameters())
    assert all(p.device.type == "cpu" for p in Block(16).parameters())  # the patch is gone afterwards


def test_load_without_skeleton_reproduces_outputs(tmp_path: Path) -> None:
    model = saved_block(tmp_path)
    loaded = load_quantized(tmp_path, model_class=Block)
    assert isinstance(loaded, Block) and loaded.config == {"width": 32}
    assert isinstance(loaded.up, DeployLinear) and isinstance(loaded.down, DeployLinear)
    assert meta_tensors(loaded) == [] and not loaded.training
    x, t = torch.randn(2, 5, 32), torch.tensor([10.0, 900.0])
    with torch.no_grad():
        assert torch.equal(loaded(x, t), model(x, t))


def test_class_outside_trusted_packages_needs_model_class(tmp_path: Path) -> None:
    saved_block(tmp_path)
    recorded = json.loads((tmp_path / MANIFEST_FILE).read_text())["source"]
    assert recorded["class_name"] == "Block" and recorded["module"] == Block.__module__
    with pytest.raises(ValueError, match=r"quant_manifest\.json.*outside the trusted packages.*model_class="):
        load_quantized(tmp_path)


def test_manifest_without_module_names_the_fix(tmp_path: Path) -> None:
    saved_block(tmp_path)
    path = tmp_path / MANIFEST_FILE
    data = json.loads(path.read_text())
    del data["source"]["module"]  # a manifest from before the module was recorded (sealed since)
    path.write_text(json.dumps(seal_manifest(data)))
    with pytest.raises(ValueError, match=r"records no module for 'Block'.*model_class="):
        load_quantized(tmp_path)
    assert isinstance(load_quantized(tmp_path, model_class=Block).up, DeployLinear)


def test_bad_recorded_config_is_named(tmp_path: Path) -> None:
    saved_block(tmp_path)
    path = tmp_path / MANIFEST_FILE
    data = json.loads(path.read_text())
    data["source"]["config"] = {"depth": 3}
    path.write_text(json.dumps(seal_manifest(data)))  # sealed again: reach the skeleton's check
    with pytest.raises(
        ValueError, match=r"quant_manifest\.json: cannot build Block from the recorded config"
    ):
        load_quantized(tmp_path, model_class=Block)


def test_wrong_argument_forms_are_type_errors(tmp_path: Path) -> None:
    saved_block(tmp_path)
    with pytest.raises(TypeError, match="directory is missing"):
        load_quantized(Block(32))  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="takes one folder"):
        load_quantized(tmp_path, tmp_path)  # type: ignore[call-overload]


@pytest.mark.parametrize("family", ["wan", "cogvideox"])
def test_tiny_diffusers_transformer_loads_from_folder_alone(family: str, tmp_path: Path) -> None:
    diffusers = pytest.importorskip("diffusers")  # not a dependency of qvgen-quant
    torch.manual_seed(0)
    if family == "wan":
        model = diffusers.WanTransformer3DModel(**WAN_TINY)
        inputs = dict(
            hidden_states=torch.randn(2, 16, 3, 8, 8),
            timestep=torch.tensor([120.0, 870.0]),
            encoder_hidden_states=torch.randn(2, 16, 64),
        )
    else:
        model = diffusers.CogVideoXTransformer3DModel(**COG_TINY)
        inputs = dict(
            hidden_states=torch.randn(2, 3, 16, 8, 8),
            timestep=torch.tensor([120, 870]),
            encoder_hidden_states=torch.randn(2, 16, 64),
        )
    model.eval()
    prepare_(model, QuantConfig.w4a4())
    initialize_(model, progress=False)
    convert_(model)
    save_quantized(model, tmp_path)
    manifest = json.loads((tmp_path / MANIFEST_FILE).read_text())
    empty = build_empty(type(model), manifest["source"]["config"], tmp_path)
    assert all(p.device.type == "meta" for p in empty.parameters())  # no float weights allocated
    loaded = load_quantized(tmp_path)
    assert type(loaded) is type(model) and meta_tensors(loaded) == []
    with torch.no_grad():
        assert torch.equal(loaded(**inputs)[0], model(**inputs)[0])
