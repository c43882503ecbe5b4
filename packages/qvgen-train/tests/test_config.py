from pathlib import Path

import pytest
import yaml

from qvgen.train.config import ConfigError, RunConfig, apply_overrides, load_config, parse_override


def _write(tmp_path: Path, data: object, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_match_the_paper_optimizer_settings(run_dict, wan_shards, tmp_path):
    cfg = RunConfig.model_validate(run_dict("wan", wan_shards, tmp_path))
    lr = cfg.optim.lr
    assert (lr.weights, lr.weight_qparams, lr.act_clip, lr.phi, lr.other) == (3e-5, 3e-5, 1e-2, 3e-5, 3e-5)
    assert cfg.optim.betas == (0.9, 0.95) and cfg.optim.eps == 1e-8 and cfg.optim.weight_decay == 1e-4
    assert cfg.train.grad_clip == 1.0
    # the fixture switches caption dropout off, so its default is read from the model itself
    assert type(cfg.train).model_fields["caption_dropout"].default == 0.05


def test_load_config_applies_set_overrides_as_yaml_scalars(run_dict, wan_shards, tmp_path):
    path = _write(tmp_path, run_dict("wan", wan_shards, tmp_path / "out"))
    cfg = load_config(path, ["train.max_steps=9", "quant.weight.bits=3", "optim.lr.act_clip=5e-3",
                             "train.grad_clip=null", "logging.tensorboard=true"])  # fmt: skip
    assert cfg.train.max_steps == 9 and cfg.quant.weight.bits == 3
    assert cfg.optim.lr.act_clip == 5e-3 and cfg.train.grad_clip is None and cfg.logging.tensorboard is True


def test_override_is_revalidated_and_error_names_the_file(run_dict, wan_shards, tmp_path):
    path = _write(tmp_path, run_dict("wan", wan_shards, tmp_path / "out"))
    with pytest.raises(ConfigError, match=r"run\.yaml --set quant\.weight\.bits=12: .*quant\.weight\..*bits"):
        load_config(path, ["quant.weight.bits=12"])


def test_unknown_key_is_rejected_with_the_file_name(run_dict, wan_shards, tmp_path):
    data = run_dict("wan", wan_shards, tmp_path / "out")
    data["train"]["learning_rate"] = 1.0
    with pytest.raises(ConfigError, match=r"bad\.yaml(.|\n)*learning_rate"):
        load_config(_write(tmp_path, data, "bad.yaml"))


def test_missing_file_and_bad_yaml_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "broken.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: not valid YAML"):
        load_config(bad)


def test_phi_that_would_outlive_the_run_is_rejected(run_dict, wan_shards, tmp_path):
    data = run_dict("wan", wan_shards, tmp_path, train={"max_steps": 5})
    with pytest.raises(ValueError, match="max_steps >= 7"):
        RunConfig.model_validate(data)


def test_training_without_data_is_rejected_but_ptq_needs_none(run_dict, wan_shards, tmp_path):
    data = run_dict("wan", wan_shards, tmp_path)
    del data["data"]
    with pytest.raises(ValueError, match="needs `data`"):
        RunConfig.model_validate(data)
    data.update(aux=None, train={"max_steps": 0})
    assert RunConfig.model_validate(data).data is None


def test_parse_override_rejects_missing_equals_and_empty_keys():
    assert parse_override("a.b=[1, 2]") == ("a.b", [1, 2])
    for bad in ("train.max_steps", "=3", "a..b=1"):
        with pytest.raises(ConfigError, match="KEY=VALUE"):
            parse_override(bad)


def test_override_into_a_scalar_names_the_field(run_dict, wan_shards, tmp_path):
    cfg = RunConfig.model_validate(run_dict("wan", wan_shards, tmp_path))
    with pytest.raises(ConfigError, match=r"`train\.max_steps` is a value"):
        apply_overrides(cfg, ["train.max_steps.x=1"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["logging.validation={height: 40, width: 64}"], r"height 40 and width 64 must be multiples of 16"),
        (["train.sharding=fsdp2", "train.mixed_precision=fp16"], r"fsdp2 with train.mixed_precision=fp16"),
    ],
)
def test_settings_that_would_fail_hours_into_a_run_are_refused_at_load(
    run_dict, wan_shards, tmp_path, overrides, message
):
    path = _write(tmp_path, run_dict("wan", wan_shards, tmp_path / "out"))
    with pytest.raises(ConfigError, match=message):
        load_config(path, overrides)
