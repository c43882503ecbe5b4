"""Issue 13, failure 2: a checkpoint saved after Φ was removed could not be resumed.

At removal the `phi` optimizer group is left with `params=[]`; the resumed run rebuilt the optimizer
without empty groups and accelerate's `load_state` failed ("different number of parameter groups").
"""

import shutil

import torch

from qvgen.train.config import RunConfig
from qvgen.train.recipe import run

# rank 4 (steps 0-1), 2 (2-3), 1 (4-5), removed at step 6; checkpoints after steps 2, 4, 6, 8
SECTIONS = {
    "export": {"fake_quant": False, "deploy": False},
    "checkpoint": {"every_n_steps": 2, "keep_last": 4},
    "train": {"max_steps": 9, "caption_dropout": 0.3},
}


def _states_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_resume_from_every_checkpoint_incl_after_phi_removal_is_bitwise_equal(run_dict, wan_shards, tmp_path):
    full = run(RunConfig.model_validate(run_dict("wan", wan_shards, tmp_path / "full", **SECTIONS)))
    saved = sorted((tmp_path / "full" / "checkpoints").iterdir())
    assert [p.name for p in saved] == [f"step-0000000{s}" for s in (2, 4, 6, 8)]
    for ckpt in saved[2:]:  # step 6: the checkpoint of the removal step; step 8: two steps without Φ
        out = tmp_path / f"resume-{ckpt.name}"
        shutil.copytree(ckpt, out / "checkpoints" / ckpt.name)
        sections = {**SECTIONS, "checkpoint": {**SECTIONS["checkpoint"], "resume_from": "latest"}}
        resumed = run(RunConfig.model_validate(run_dict("wan", wan_shards, out, **sections)))
        step = int(ckpt.name.split("-")[1])
        assert resumed.losses == full.losses[step:], ckpt.name
        assert _states_equal(resumed.model, full.model), ckpt.name
