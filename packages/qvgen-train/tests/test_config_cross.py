"""Issue 13, failure 3: config fields that contradict each other are refused when the config is loaded.

`quant.weight.bits=8` trained to the end and only then failed at export ("deploy layers store 2..4-bit
codes"); a weight-only config (`activation.kind: none`) trained and then failed converting to W4A4.
"""

import pytest
import yaml

from qvgen import quant
from qvgen.models import get_family
from qvgen.train.config import ConfigError, RunConfig, load_config
from qvgen.train.recipe import run


def _path(tmp_path, data):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_weight_bits_the_deploy_export_cannot_store_are_refused_at_load(run_dict, wan_shards, tmp_path):
    path = _path(tmp_path, run_dict("wan", wan_shards, tmp_path / "out"))
    with pytest.raises(ConfigError, match=r"run\.yaml(.|\n)*quant\.weight\.bits=8 cannot be exported"):
        load_config(path, ["quant.weight.bits=8"])
    cfg = load_config(path, ["quant.weight.bits=8", "export.deploy=false"])  # fake-quant export only
    assert cfg.quant.weight.bits == 8


def test_role_override_bits_are_checked_and_skipped_roles_are_not(run_dict, wan_shards, tmp_path):
    data = run_dict("wan", wan_shards, tmp_path / "out")
    data["quant"] = {"role_overrides": {"ffn_up": {"weight_bits": 6}}}
    with pytest.raises(ValueError, match=r"quant\.role_overrides\.ffn_up\.weight_bits=6"):
        RunConfig.model_validate(data)
    data["quant"] = {
        "weight": {"bits": 8},
        "role_overrides": {role.value: {"weight_bits": 4} for role in quant.LayerRole},
    }
    assert RunConfig.model_validate(data).quant.weight.bits == 8  # every role overridden to 4 bits


def test_weight_only_config_exports_w4a16_deploy_layers(run_dict, wan_shards, tmp_path):
    data = run_dict("wan", wan_shards, tmp_path / "out", train={"max_steps": 0}, aux=None)
    data["quant"] = {"activation": {"kind": "none"}}
    del data["data"]
    cfg = RunConfig.model_validate(data)
    result = run(cfg)
    manifest = quant.read_manifest(result.deploy_dir)
    assert {layer.target for layer in manifest.layers} == {"w4a16"}
    quant.load_quantized(get_family("wan").load_transformer(cfg.model.checkpoint), result.deploy_dir)
