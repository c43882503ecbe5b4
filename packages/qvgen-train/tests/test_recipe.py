"""The recipe end to end on the tiny Wan and CogVideoX: training, rank decay, resume, export, reload."""

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

from qvgen import auxiliary, quant
from qvgen.models import get_family, load_student
from qvgen.train.checkpoint import CheckpointError
from qvgen.train.config import RunConfig
from qvgen.train.recipe import run


def _cfg(run_dict, family, shards, out, **sections) -> RunConfig:
    return RunConfig.model_validate(run_dict(family, shards, out, **sections))


def _states_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("family", ["wan", "cogvideox"])
def test_tiny_run_trains_decays_phi_to_rank_zero_and_exports_a_loadable_student(
    family, run_dict, wan_shards, cog_shards, tmp_path
):
    shards = wan_shards if family == "wan" else cog_shards
    cfg = _cfg(run_dict, family, shards, tmp_path / "out", train={"caption_dropout": 0.5})
    result = run(cfg)
    assert result.phi_rank == 0 and result.steps == 7 and len(result.losses) == 7
    assert all(0 < loss < float("inf") for loss in result.losses)
    records = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 8))
    assert [r["phi_rank"] for r in records] == [4, 4, 2, 2, 1, 1, 0]
    assert records[0]["lr"] == 0.0 and records[1]["lr"] > 0  # warm-up starts at 0
    assert not auxiliary.lowrank_parameters(result.model)

    student = load_student(result.fake_quant_dir)
    assert set(quant.quantized_layers(student)) and not auxiliary.lowrank_parameters(student)
    _assert_deploy_matches_and_samples(family, cfg.model.checkpoint, result.deploy_dir, result.model)


def _assert_deploy_matches_and_samples(family: str, base, deploy_dir, trained) -> None:
    """The deploy export reloads onto the base checkpoint equal to the trained model and samples 9 frames."""
    fam = get_family(family)
    deploy = quant.load_quantized(fam.load_transformer(base), deploy_dir)
    assert _states_equal(deploy, trained)
    components = dataclasses.replace(fam.load(base), transformer=deploy)
    kwargs = fam.sample_kwargs(
        components, prompt="a red square moves left", height=32, width=32, num_frames=9,
        num_inference_steps=2, guidance_scale=1.0, generator=torch.Generator().manual_seed(0), output_type="np",
    )  # fmt: skip
    frames = fam.pipeline(components)(**kwargs).frames
    assert frames.shape[:2] == (1, 9) and bool(np.isfinite(frames).all())


def test_gradient_checkpointing_leaves_the_training_result_unchanged(run_dict, wan_shards, tmp_path):
    sections = {"export": {"fake_quant": False, "deploy": False}}
    plain = run(_cfg(run_dict, "wan", wan_shards, tmp_path / "a", **sections))
    with_gc = run(
        _cfg(run_dict, "wan", wan_shards, tmp_path / "b", train={"gradient_checkpointing": True}, **sections)
    )
    assert with_gc.losses == pytest.approx(plain.losses, rel=1e-5)
    for (name, a), (_, b) in zip(plain.model.state_dict().items(), with_gc.model.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)


def test_student_differs_from_teacher_after_training_and_teacher_is_untouched(run_dict, wan_shards, tmp_path):
    cfg = _cfg(run_dict, "wan", wan_shards, tmp_path / "out", export={"deploy": False})
    result = run(cfg)
    teacher = get_family("wan").load_transformer(cfg.model.checkpoint, dtype="float32")
    layers = quant.quantized_layers(result.model)
    name = next(iter(layers))
    assert not torch.equal(layers[name].weight, teacher.get_submodule(name).weight)


def test_resumed_run_ends_bitwise_equal_to_an_uninterrupted_run(run_dict, wan_shards, tmp_path):
    sections = {
        "export": {"fake_quant": False, "deploy": False},
        "checkpoint": {"every_n_steps": 2, "keep_last": 3},
        "train": {"caption_dropout": 0.3},
    }
    full = run(_cfg(run_dict, "wan", wan_shards, tmp_path / "a", **sections))
    # "kill" after step 4 (a rank-decay boundary follows): resume a fresh process state from that checkpoint.
    shutil.copytree(
        tmp_path / "a" / "checkpoints" / "step-00000004", tmp_path / "b" / "checkpoints" / "step-00000004"
    )
    sections["checkpoint"] = {**sections["checkpoint"], "resume_from": "latest"}
    resumed = run(_cfg(run_dict, "wan", wan_shards, tmp_path / "b", **sections))
    assert resumed.losses == full.losses[4:]
    assert _states_equal(resumed.model, full.model)


def test_resume_refuses_a_checkpoint_from_a_different_run(run_dict, wan_shards, tmp_path):
    sections = {"export": {"fake_quant": False, "deploy": False}, "checkpoint": {"every_n_steps": 3}}
    run(_cfg(run_dict, "wan", wan_shards, tmp_path / "a", **sections))
    sections["checkpoint"] = {"resume_from": str(tmp_path / "a" / "checkpoints" / "step-00000006")}
    with pytest.raises(CheckpointError, match=r"train\.seed: checkpoint 3 vs now 4"):
        run(_cfg(run_dict, "wan", wan_shards, tmp_path / "b", train={"seed": 4}, **sections))


def test_a_fresh_run_refuses_a_folder_that_holds_another_runs_checkpoints(run_dict, wan_shards, tmp_path):
    sections = {"export": {"fake_quant": False, "deploy": False}, "checkpoint": {"every_n_steps": 3}}
    run(_cfg(run_dict, "wan", wan_shards, tmp_path / "a", **sections))
    before = sorted(p.name for p in (tmp_path / "a" / "checkpoints").iterdir())
    with pytest.raises(
        ValueError, match=r"checkpoints: holds checkpoints of an earlier run .*resume_from=latest"
    ):
        run(_cfg(run_dict, "wan", wan_shards, tmp_path / "a", **sections))
    assert sorted(p.name for p in (tmp_path / "a" / "checkpoints").iterdir()) == before


def test_metrics_log_of_a_resumed_run_has_each_step_once(run_dict, wan_shards, tmp_path):
    sections = {"export": {"fake_quant": False, "deploy": False}, "checkpoint": {"every_n_steps": 2}}
    full = run(_cfg(run_dict, "wan", wan_shards, tmp_path / "a", **sections))
    sections["checkpoint"] = {**sections["checkpoint"], "resume_from": "latest"}
    shutil.rmtree(tmp_path / "a" / "checkpoints" / "step-00000006")  # as if killed after step 6's log
    run(_cfg(run_dict, "wan", wan_shards, tmp_path / "a", **sections))
    records = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, len(full.losses) + 1))
    assert [r["loss"] for r in records] == list(full.losses)
    assert all(r["lr"] < 1e-3 for r in records)  # the latent weights' lr, not the clip logits' 1e-2


@pytest.mark.parametrize(("loss_target", "loads"), [("teacher", 2), ("data", 1)])
def test_the_teacher_is_loaded_only_when_a_loss_term_reads_it(
    loss_target, loads, run_dict, wan_shards, tmp_path, monkeypatch
):
    family = get_family("wan")
    real, seen = family.load_transformer, []

    def counting(path, dtype="float32"):  # type: ignore[no-untyped-def]
        seen.append(dtype)
        return real(path, dtype)

    monkeypatch.setattr(family, "load_transformer", counting)
    run(
        _cfg(
            run_dict,
            "wan",
            wan_shards,
            tmp_path / "out",
            aux=None,
            train={"max_steps": 2, "loss_target": loss_target},
        )
    )
    assert len(seen) == loads  # the student, and the teacher only when its prediction is the target


def test_ptq_baseline_needs_no_data_and_no_training(run_dict, wan_shards, tmp_path):
    data = run_dict("wan", wan_shards, tmp_path / "out", train={"max_steps": 0}, aux=None)
    data["quant"] = {"weight": {"kind": "minmax"}}
    del data["data"]
    result = run(RunConfig.model_validate(data))
    assert result.losses == () and result.phi_rank is None
    assert (result.deploy_dir / "quant_manifest.json").is_file()


def test_validation_clips_are_written_as_mp4_every_n_steps(run_dict, wan_shards, tmp_path, monkeypatch):
    validation = {"every_n_steps": 3, "prompts": ["a red square"], "num_frames": 5, "height": 32, "width": 32,
                  "num_inference_steps": 2, "guidance_scale": 1.0}  # fmt: skip
    sections = {
        "export": {"fake_quant": False, "deploy": False},
        "logging": {"progress_bar": False, "validation": validation},
    }
    family_type = type(get_family("wan"))
    loads = []
    original = family_type.load

    def counting_load(self, *args, **kwargs):
        loads.append(args[0] if args else kwargs.get("path"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(family_type, "load", counting_load)
    run(_cfg(run_dict, "wan", wan_shards, tmp_path / "out", **sections))
    clips = sorted(p.name for p in (tmp_path / "out" / "validation").iterdir())
    assert clips == ["step-00000003-0.mp4", "step-00000006-0.mp4"]
    assert all((tmp_path / "out" / "validation" / c).stat().st_size > 0 for c in clips)
    # the validation components are read once per run, not once per validation
    checkpoint = str(_cfg(run_dict, "wan", wan_shards, tmp_path / "x").model.checkpoint)
    assert [str(p) for p in loads].count(checkpoint) == 1


def test_tensorboard_without_the_package_is_a_clear_error(run_dict, wan_shards, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if "tensorboard" in name else real(name, *a)
    )
    with pytest.raises(ValueError, match="pip install tensorboard"):
        run(_cfg(run_dict, "wan", wan_shards, tmp_path / "out", logging={"tensorboard": True}))


@pytest.mark.parametrize("variant", ["5b", "1.5"])
def test_tiny_rope_cogvideox_trains_resumes_exports_and_samples(variant, run_dict, cog_shards, tmp_path):
    # 5B: 3D RoPE; 1.5: RoPE + temporal patches (the shards' 3 latent frames are padded to 4 in predict).
    from qvgen.models.testing import tiny_cogvideox_checkpoint
    from qvgen.train.export import export_student

    base = tiny_cogvideox_checkpoint(variant)

    def cfg(out, **sections):
        sections = {"aux": {"decay": {"initial_rank": 1, "period": 1}},
                    "train": {"max_steps": 2, "caption_dropout": 0.3},
                    "export": {"fake_quant": False, "deploy": False}, **sections}  # fmt: skip
        data = run_dict("cogvideox", cog_shards, out, **sections)
        data["model"]["checkpoint"] = str(base)
        return RunConfig.model_validate(data)

    full = run(cfg(tmp_path / "a", checkpoint={"every_n_steps": 1, "keep_last": 2}))
    assert len(full.losses) == 2 and all(0 < loss < float("inf") for loss in full.losses)
    shutil.copytree(
        tmp_path / "a" / "checkpoints" / "step-00000001", tmp_path / "b" / "checkpoints" / "step-00000001"
    )
    resumed = run(cfg(tmp_path / "b", checkpoint={"resume_from": "latest"}))
    assert resumed.losses == full.losses[1:] and _states_equal(resumed.model, full.model)

    fake_dir, deploy_dir = export_student(
        resumed.model, cfg(tmp_path / "b", export={"fake_quant": True, "deploy": True})
    )
    assert fake_dir is not None and deploy_dir is not None
    student = load_student(fake_dir)
    assert student.config.use_rotary_positional_embeddings and set(quant.quantized_layers(student))
    _assert_deploy_matches_and_samples("cogvideox", base, deploy_dir, resumed.model)
