"""The baselines as methods of the recipe: config rules, and train → resume → export on the tiny Wan."""

import shutil
from pathlib import Path

import pytest
import torch

from qvgen import quant
from qvgen.models import get_family, load_student, read_student_manifest
from qvgen.train.config import ConfigError, RunConfig, load_config
from qvgen.train.method_config import QDMMethod
from qvgen.train.methods import LoRADelta, qdm_loss
from qvgen.train.recipe import run

CONFIGS = Path(__file__).resolve().parents[3] / "configs"
W4A4 = {
    "weight": {"kind": "lsq_plus", "bits": 4},
    "activation": {"kind": "clipped_dynamic", "bits": 4, "groups": 10},
}


def _method_dict(run_dict, shards, out, method, **sections):
    data = run_dict("wan", shards, out, aux=None, **sections)
    data["aux"] = None
    data["method"] = method
    data.setdefault("quant", W4A4)
    return data


def _states_equal(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# -- config rules ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "change", "message"),
    [
        ({"kind": "efficientdm"}, {"aux": {"decay": {"initial_rank": 4, "period": 2}}}, "aux=null"),
        (
            {"kind": "efficientdm"},
            {"quant": {"activation": {"kind": "clipped_dynamic", "groups": 1}}},
            "groups >= 2",
        ),
        ({"kind": "efficientdm", "lora_rank": 128}, {}, r"method.lora_rank=128 does not fit the wan family"),
        ({"kind": "qdm"}, {"quant": {"weight": {"kind": "minmax"}}}, "lsq_plus"),
        ({"kind": "qdm", "data_weight": 0, "mimic_weight": 0}, {}, "both 0"),
        ({"kind": "svdquant"}, {"train": {"max_steps": 0}}, r"quant.kept_lowrank"),
        ({"kind": "svdquant"}, {"quant": {**W4A4, "kept_lowrank": {"rank": 8}}}, "train.max_steps=0"),
        (
            {"kind": "svdquant"},
            {"train": {"max_steps": 0}, "quant": {"weight": {"bits": 8}, "kept_lowrank": {"rank": 8}}},
            r"weight.bits=8 cannot be deployed",
        ),
        (
            {"kind": "svdquant"},
            {"train": {"max_steps": 0}, "quant": {"activation": {"bits": 3}, "kept_lowrank": {"rank": 8}}},
            r"activation.bits=3",
        ),
        (
            {"kind": "svdquant"},
            {"train": {"max_steps": 0}, "quant": {"kept_lowrank": {"rank": 96}}},
            r"kept_lowrank.rank=96 does not fit the wan family",
        ),
        ({"kind": "qat"}, {"quant": {"kept_lowrank": {"rank": 8}}}, "method.kind='svdquant'"),
    ],
)
def test_a_method_option_the_config_cannot_take_is_refused_at_load(
    run_dict, wan_shards, tmp_path, method, change, message
):
    import yaml

    data = _method_dict(run_dict, wan_shards, tmp_path / "out", method)
    for key, value in change.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) and data.get(key) else value
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("name", ["efficientdm", "qdm", "svdquant-w4a4", "svdquant-w4a6"])
def test_each_method_has_a_tiny_config_that_loads(name):
    cfg = load_config(CONFIGS / f"tiny-wan-{name}.yaml")
    assert cfg.method.kind == name.split("-")[0]


def test_lora_delta_starts_at_zero_and_scales_by_alpha_over_rank():
    delta = LoRADelta(8, 6, 2, 4.0, torch.Generator().manual_seed(0))
    assert torch.equal(delta(), torch.zeros(6, 8)) and delta.scale == 2.0
    with torch.no_grad():
        delta.up.fill_(1.0)
    torch.testing.assert_close(delta(), (torch.ones(6, 2) @ delta.down) * 2.0)


def test_qdm_loss_is_the_weighted_sum_of_data_and_mimicking_terms():
    pred, data, teacher = torch.zeros(2, 3), torch.ones(2, 3), torch.full((2, 3), 2.0)
    loss = qdm_loss(pred, data, teacher, QDMMethod(data_weight=0.5, mimic_weight=2.0))
    assert float(loss) == pytest.approx(0.5 * 1.0 + 2.0 * 4.0)


# -- train, resume, export ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method", [{"kind": "efficientdm", "lora_rank": 4, "lora_alpha": 4.0}, {"kind": "qdm"}]
)
def test_qat_baseline_trains_resumes_bitwise_and_exports(run_dict, wan_shards, tmp_path, method):
    sections = {"checkpoint": {"every_n_steps": 2, "keep_last": 3}, "train": {"max_steps": 4}}
    full = run(
        RunConfig.model_validate(_method_dict(run_dict, wan_shards, tmp_path / "a", method, **sections))
    )
    assert len(full.losses) == 4 and all(0 < v < float("inf") for v in full.losses)
    layers = quant.deployed_layers(full.model)  # the run converted its student in place
    assert layers and not any("weight_delta" in k for k in full.model.state_dict())  # LoRA merged

    shutil.copytree(
        tmp_path / "a" / "checkpoints" / "step-00000002", tmp_path / "b" / "checkpoints" / "step-00000002"
    )
    sections["checkpoint"] = {**sections["checkpoint"], "resume_from": "latest"}
    resumed = run(
        RunConfig.model_validate(_method_dict(run_dict, wan_shards, tmp_path / "b", method, **sections))
    )
    assert resumed.losses == full.losses[2:]
    assert _states_equal(resumed.model, full.model)

    student = load_student(full.fake_quant_dir)
    assert read_student_manifest(full.fake_quant_dir).run_config["method"]["kind"] == method["kind"]
    assert set(quant.quantized_layers(student)) == set(layers)
    fam = get_family("wan")
    deploy = quant.load_quantized(fam.load_transformer(student_checkpoint(full)), full.deploy_dir)
    assert _states_equal(deploy, full.model)


def student_checkpoint(result):
    return read_student_manifest(result.fake_quant_dir).checkpoint


def test_efficientdm_trains_only_the_lora_branch_not_the_latent_weights(run_dict, wan_shards, tmp_path):
    method = {"kind": "efficientdm", "lora_rank": 4, "lora_alpha": 4.0, "train_weight_qparams": False}
    sections = {"train": {"max_steps": 3}, "export": {"fake_quant": False, "deploy": False}}
    cfg = RunConfig.model_validate(_method_dict(run_dict, wan_shards, tmp_path / "a", method, **sections))
    result = run(cfg)
    teacher = get_family("wan").load_transformer(cfg.model.checkpoint, dtype="float32")
    for name, layer in quant.quantized_layers(result.model).items():
        original = teacher.get_submodule(name).weight
        # merged W = W0 + B·A·α/r exactly: the latent W itself never moved, only the branch did
        assert not torch.equal(layer.weight, original), name
        sv = torch.linalg.svdvals((layer.weight - original).detach().double())
        assert sv[4] < 1e-2 * sv[0], name  # rank 4 up to the float32 rounding of the merge


@pytest.mark.parametrize("act_bits", [4, 6])
def test_svdquant_ptq_keeps_the_branch_in_both_exports(run_dict, wan_shards, tmp_path, act_bits):
    q = {**W4A4, "activation": {**W4A4["activation"], "bits": act_bits}, "kept_lowrank": {"rank": 8}}
    method = {"kind": "svdquant", "calibration_batches": 2}
    data = _method_dict(run_dict, wan_shards, tmp_path / "a", method, train={"max_steps": 0})
    data["quant"] = q
    result = run(RunConfig.model_validate(data))
    assert result.losses == ()
    student = load_student(result.fake_quant_dir)
    kept = [layer.kept for layer in quant.quantized_layers(student).values()]
    assert kept and all(k is not None and k.rank == 8 for k in kept)
    assert not all(torch.equal(k.smooth, torch.ones_like(k.smooth)) for k in kept)  # calibrated λ
    manifest = quant.read_manifest(result.deploy_dir)
    assert {layer.kept_rank for layer in manifest.layers} == {8}
    assert {layer.act_bits for layer in manifest.layers} == {act_bits}
    fam = get_family("wan")
    deploy = quant.load_quantized(fam.load_transformer(data["model"]["checkpoint"]), result.deploy_dir)
    assert _states_equal(deploy, result.model)


# -- paper-scale configs of the larger models --------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "model"),
    [
        ("wan2.1-t2v-14b-qvgen.yaml", "wan2.1-t2v-14b"),
        ("cogvideox-5b-qvgen.yaml", "cogvideox-5b"),
        ("cogvideox1.5-5b-qvgen.yaml", "cogvideox1.5-5b"),
    ],
)
def test_paper_scale_configs_of_the_larger_models_sample_with_their_settings(config, model):
    from qvgen.models.real_models import get_real_model

    cfg = load_config(CONFIGS / config)
    sampling = get_real_model(model).sampling
    val = cfg.logging.validation
    assert val is not None and cfg.aux is not None and cfg.aux.decay.initial_rank == 32
    assert (val.height, val.width, val.num_frames, val.fps) == (
        sampling.height, sampling.width, sampling.num_frames, sampling.fps,
    )  # fmt: skip
    assert cfg.model.family == get_real_model(model).family


def test_wan22_ti2v_5b_config_carries_the_wan_method_and_shards_with_fsdp2():
    from qvgen.models.real_models import get_real_model

    cfg = load_config(CONFIGS / "wan2.2-ti2v-5b-qvgen.yaml")
    paper = load_config(CONFIGS / "wan2.1-t2v-1.3b-qvgen.yaml")
    entry = get_real_model("wan2.2-ti2v-5b")
    assert cfg.model.family == entry.family == "wan"
    assert cfg.model.sample_flow_shift == entry.sampling.scheduler_overrides["flow_shift"] == 5.0
    # the method settings of the paper's Wan run, unchanged
    for section in ("quant", "aux", "optim"):
        assert getattr(cfg, section) == getattr(paper, section), section
    same = ("max_steps", "grad_clip", "gradient_checkpointing", "mixed_precision", "caption_dropout")
    assert all(getattr(cfg.train, f) == getattr(paper.train, f) for f in same)
    assert cfg.train.loss_target == paper.train.loss_target == "teacher"
    # 5B does not fit DDP on 80 GB cards (memory plan); FSDP2 refuses in-training validation
    assert cfg.train.sharding == "fsdp2" and cfg.logging.validation is None
    assert cfg.data.batch_size == paper.data.batch_size


def test_the_method_rank_bound_holds_for_every_real_model():
    from qvgen.models.real_models import REAL_MODELS, build_real_on_meta
    from qvgen.train.method_config import SMALLEST_LINEAR

    for name, entry in REAL_MODELS.items():
        model = build_real_on_meta(name)
        smallest = min(
            min(m.in_features, m.out_features) for m in model.modules() if isinstance(m, torch.nn.Linear)
        )
        assert smallest >= SMALLEST_LINEAR[entry.family], name
