"""Issue 13, failure 7: the global RNGs (Python, NumPy, torch) were never seeded from the run seed."""

import random

import numpy as np
import torch

from qvgen.train.config import RunConfig
from qvgen.train.recipe import run


def _draws() -> tuple[float, float, float]:
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def _ptq(run_dict, wan_shards, out, seed):
    data = run_dict("wan", wan_shards, out, train={"max_steps": 0, "seed": seed}, aux=None)
    data["export"] = {"fake_quant": False, "deploy": False}
    del data["data"]
    return RunConfig.model_validate(data)


def test_run_seeds_python_numpy_and_torch_global_rngs_from_the_run_seed(run_dict, wan_shards, tmp_path):
    after = []
    for i, outside in enumerate((1, 2)):  # different global states before the run
        random.seed(outside)
        np.random.seed(outside)
        torch.manual_seed(outside)
        run(_ptq(run_dict, wan_shards, tmp_path / str(i), seed=11))
        after.append(_draws())
    assert after[0] == after[1]
    random.seed(11)  # rank 0 of a run with train.seed 11 (nothing in the run draws from these two)
    np.random.seed(11)
    assert after[0][:2] == _draws()[:2]
