"""Two-process gloo data-parallel training across every decay boundary; launched by test_distributed.py.

Usage: python dp_worker.py OUT_DIR RUN[,RUN...] with RUN = WRAPPER-MODE, WRAPPER in {ddp, fsdp},
MODE in {resvd, columns}. Each rank trains on different data and writes its final full state_dict, the
Φ width per step and whether the Φ gradients agreed across ranks to OUT_DIR/<RUN>-rank<R>.pt.
- ddp: Φ inside DDP; DDP is re-wrapped whenever `apply_` replaced Parameters.
- fsdp: FSDP2 `fully_shard` with Φ in `ignored_params` (replicated, outside the wrapper), gradients
  averaged by `all_reduce_grads_`; no re-wrap needed.
"""

import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel as DDP

from qvgen.auxiliary import (
    AuxConfig,
    DecaySchedule,
    all_reduce_grads_,
    apply_,
    attach_,
    lowrank_parameters,
    rank_at,
    required_steps,
)
from qvgen.auxiliary.testing import tiny_quantized_mlp

WORLD = 2


def worker(rank: int, out_dir: str, runs: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{out_dir}/rendezvous", rank=rank, world_size=WORLD)
    for run in runs.split(","):
        wrapper, mode = run.split("-")
        train(rank, Path(out_dir) / f"{run}-rank{rank}.pt", wrapper, mode)
    dist.destroy_process_group()


def train(rank: int, out: Path, wrapper: str, mode: str) -> None:
    torch.manual_seed(0)
    model = tiny_quantized_mlp()
    schedule = DecaySchedule(initial_rank=8, period=3)
    branches = attach_(model, AuxConfig(decay=schedule, mode=mode))  # type: ignore[arg-type]
    if wrapper == "ddp":
        wrapped: torch.nn.Module = DDP(model)
    else:
        mesh = init_device_mesh("cpu", (WORLD,))
        wrapped = fully_shard(model, mesh=mesh, ignored_params=set(lowrank_parameters(model)))
    optimizer = torch.optim.Adam(wrapped.parameters(), lr=1e-2)
    widths: list[list[int]] = []
    phi_grads_agree: list[bool] = []
    for step in range(required_steps(schedule)):
        if apply_(branches, rank_at(step, schedule), optimizer) and wrapper == "ddp":
            wrapped = DDP(model)  # Parameters were replaced or removed: DDP must reduce the new set
        x = torch.randn(8, 64, generator=torch.Generator().manual_seed(1000 * rank + step))
        optimizer.zero_grad()
        wrapped(x).square().mean().backward()
        if wrapper == "fsdp":
            all_reduce_grads_(branches)
        if branches:
            grad = next(iter(branches.values())).L.grad
            assert grad is not None and not isinstance(grad, DTensor)
            gathered = [torch.empty_like(grad) for _ in range(WORLD)]
            dist.all_gather(gathered, grad)
            phi_grads_agree.append(bool(torch.equal(gathered[0], gathered[1])))
        optimizer.step()
        widths.append([b.width for b in branches.values()])
    state = {k: v.full_tensor() if isinstance(v, DTensor) else v for k, v in model.state_dict().items()}
    torch.save({"state": state, "widths": widths, "phi_grads_agree": phi_grads_agree}, out)


if __name__ == "__main__":
    mp.spawn(worker, args=(sys.argv[1], sys.argv[2]), nprocs=WORLD, join=True)
