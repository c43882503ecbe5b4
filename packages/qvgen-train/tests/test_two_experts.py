"""Issue 34, two experts: one run config (`expert: both`) quantizes both experts of a Wan 2.2 A14B-shaped model,
each on its own side of the boundary, with its own Φ and checkpoints; the export loads with load_pipeline, and an
interrupted run resumes the second expert without training the first again."""

from pathlib import Path
from typing import Any

import pytest
import torch

from qvgen import auxiliary
from qvgen.core import Interrupted
from qvgen.models import EXPERTS, load_pipeline, load_student, read_experts_manifest, read_student_manifest
from qvgen.models.testing import tiny_two_expert_checkpoint
from qvgen.train import recipe
from qvgen.train.config import RunConfig
from qvgen.train.recipe import RunResult, run

BOUNDARY = 0.875
REAL_SAMPLE_TIMESTEPS = recipe._sample_timesteps


def _cfg(run_dict: Any, shards: Path, out: Path, **sections: Any) -> RunConfig:
    base = str(tiny_two_expert_checkpoint(0, BOUNDARY))
    data = run_dict("wan", shards, out, expert="both", **sections)
    data["model"]["checkpoint"] = base
    return RunConfig.model_validate(data)


def _spy(
    monkeypatch: pytest.MonkeyPatch, interrupt_at: tuple[str, int] | None = None
) -> list[tuple[str, Any]]:
    """Record (expert, timesteps) of every training step; raise Ctrl-C at the given (expert, step)."""
    seen: list[tuple[str, Any]] = []
    real = REAL_SAMPLE_TIMESTEPS  # not an earlier spy

    def spy(family: Any, n: int, generator: Any, cfg: RunConfig, expert: Any) -> torch.Tensor:
        steps = sum(1 for name, _ in seen if name == cfg.expert)
        if interrupt_at == (cfg.expert, steps):
            raise KeyboardInterrupt
        t = real(family, n, generator, cfg, expert)
        seen.append((str(cfg.expert), t))
        return t

    monkeypatch.setattr(recipe, "_sample_timesteps", spy)
    return seen


@pytest.fixture(scope="module")
def full(run_dict: Any, wan_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[RunResult, list]:
    with pytest.MonkeyPatch.context() as mp:
        seen = _spy(mp)
        result = run(_cfg(run_dict, wan_shards, tmp_path_factory.mktemp("two") / "run"))
    return result, seen


def test_both_experts_trained_in_their_ranges_to_rank_0_and_export_loads(
    full: tuple[RunResult, list],
) -> None:
    result, seen = full
    assert [name for name, _ in seen] == ["transformer"] * 7 + ["transformer_2"] * 7  # one after the other
    for name, t in seen:
        assert t.shape == (2,)
        assert bool((t >= BOUNDARY * 1000).all() if name == "transformer" else (t < BOUNDARY * 1000).all()), t
    assert result.phi_rank == 0 and set(result.model) == set(EXPERTS)
    for name in EXPERTS:
        assert not auxiliary.lowrank_parameters(result.model[name])
        assert (result.output_dir / name / "final" / "deploy").is_dir()  # each expert: its own complete run
    assert len(result.losses) == 14
    assert result.deploy_dir is not None and result.fake_quant_dir is not None
    manifest = read_experts_manifest(result.deploy_dir)
    assert manifest is not None and manifest.boundary_ratio == BOUNDARY and manifest.content == "deploy"
    pipe = load_pipeline(tiny_two_expert_checkpoint(0, BOUNDARY), result.deploy_dir, progress=False)
    assert pipe.config.boundary_ratio == BOUNDARY
    fake = read_experts_manifest(result.fake_quant_dir)
    assert fake is not None and fake.content == "fake_quant" and fake.experts == EXPERTS
    # each expert of the fake-quant folder rebuilds from its own full-precision expert
    for name in EXPERTS:
        student = load_student(result.fake_quant_dir / name)
        assert read_student_manifest(result.fake_quant_dir / name).checkpoint.endswith(f"/{name}")
        assert sum(p.numel() for p in student.parameters()) > 0


def test_interrupted_run_resumes_the_second_expert_only(
    run_dict: Any,
    wan_shards: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    full: tuple[RunResult, list],
) -> None:
    sections = {"checkpoint": {"every_n_steps": 2, "keep_last": 4}}
    seen_before = _spy(monkeypatch, interrupt_at=("transformer_2", 5))
    with pytest.raises(Interrupted) as stopped:
        run(_cfg(run_dict, wan_shards, tmp_path / "run", **sections))
    assert [n for n, _ in seen_before] == ["transformer"] * 7 + ["transformer_2"] * 5
    assert "interrupted at step 5" in str(stopped.value)
    assert (tmp_path / "run" / "transformer" / "final" / "deploy").is_dir()
    seen = _spy(monkeypatch)
    resume = {"checkpoint": {**sections["checkpoint"], "resume_from": "latest"}}
    resumed = run(_cfg(run_dict, wan_shards, tmp_path / "run", **resume))
    assert [name for name, _ in seen] == [
        "transformer_2"
    ] * 3  # steps 4, 5, 6: the first expert is not retrained
    assert set(resumed.model) == {"transformer_2"}
    assert resumed.losses == full[0].losses[7 + 4 :]  # the uninterrupted run's last steps of expert 2
    assert read_experts_manifest(tmp_path / "run" / "final" / "deploy") is not None


def test_expert_needs_a_two_expert_checkpoint(run_dict: Any, wan_shards: Path, tmp_path: Path) -> None:
    cfg = RunConfig.model_validate(run_dict("wan", wan_shards, tmp_path / "run", expert="transformer_2"))
    with pytest.raises(ValueError, match="has no transformer_2/boundary_ratio"):
        run(cfg)


def test_expert_config_rules(run_dict: Any, wan_shards: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="use resume_from=latest"):
        _cfg(run_dict, wan_shards, tmp_path, checkpoint={"resume_from": str(tmp_path / "x")})
    with pytest.raises(ValueError, match="enable one"):
        _cfg(run_dict, wan_shards, tmp_path, export={"fake_quant": False, "deploy": False})
    with pytest.raises(ValueError, match=r"logging\.validation=null"):
        _cfg(run_dict, wan_shards, tmp_path, logging={"validation": {"every_n_steps": 2}})
