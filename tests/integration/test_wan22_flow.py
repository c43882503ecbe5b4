"""Issue 34: the tiny Wan 2.2 flows end to end, as `benchmarks/wan22.py` runs them: procedural mp4s →
`qvgen.train.precompute` (the checkpoint's own VAE and text encoder) → `qvgen.train.run` (W4A4 QVGen, Φ to
rank 0; `expert: both` for the A14B-shaped pair) → fake-quant + deploy export → `load_pipeline(base, deploy)`
→ one sampled clip → `qvgen.eval.score_video` / `temporal_flickering`; deploy agrees with fake-quant."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="module")
def wan22(import_benchmark: Any) -> Any:
    return import_benchmark("wan22")


def test_ti2v_flow_runs_end_to_end_and_deploy_matches_fake_quant(wan22: Any, tmp_path: Path) -> None:
    flow, pipe = wan22.ti2v_flow(tmp_path)
    assert flow.ok, flow
    assert flow.phi_rank == 0 and flow.token_timesteps_seen and pipe.config.expand_timesteps is True
    assert flow.frames.shape == (wan22.FRAMES, wan22.SIZE, wan22.SIZE, 3)
    checks, _gaps = wan22.per_token_timesteps(flow, pipe)
    assert all(checks.values()), checks


def test_two_expert_flow_runs_end_to_end_and_reads_no_fp_expert(wan22: Any, tmp_path: Path) -> None:
    flow, pipe = wan22.two_expert_flow(tmp_path / "flow")
    assert flow.ok, flow
    assert flow.experts_called == {"transformer", "transformer_2"}
    assert pipe.config.boundary_ratio == pytest.approx(0.875)
    assert wan22.moved_away_equal(flow, tmp_path)  # the same clip without either fp expert folder


def test_strace_parser_counts_reads_and_maps_of_files_under_a_folder(wan22: Any, tmp_path: Path) -> None:
    fp, other = tmp_path / "base" / "transformer", tmp_path / "deploy"
    log = "\n".join(
        [
            f'10 openat(AT_FDCWD, "{fp}/w.safetensors", O_RDONLY|O_CLOEXEC) = 5',
            f'10 openat(AT_FDCWD, "{other}/q.safetensors", O_RDONLY) = 6',
            '10 read(5, "abc"..., 8192) = 8192',
            "11 pread64(5,  <unfinished ...>",
            '10 read(6, "x"..., 10) = 10',
            '11 <... pread64 resumed>"y"..., 100, 0) = 100',
            "10 mmap(NULL, 4096, PROT_READ, MAP_SHARED, 5, 0) = 0x7f0000000000",
            "10 close(5) = 0",
            '10 read(5, "z"..., 7) = 7',  # fd 5 is closed: not under the folder any more
            f'10 openat(AT_FDCWD, "{fp}/missing", O_RDONLY) = -1 ENOENT (No such file or directory)',
        ]
    )
    assert wan22._strace_bytes(log, {"fp": fp, "deploy": other}) == {"fp": 8192 + 100 + 4096, "deploy": 10}
