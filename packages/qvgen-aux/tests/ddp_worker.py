"""Two-process gloo DDP training across every decay boundary; launched by test_distributed.py.

Usage: python ddp_worker.py OUT_DIR MODE[,MODE...]. For each mode, each rank trains on different data,
re-wraps DDP whenever `apply_` replaced Parameters, and writes its final state_dict and width log to
OUT_DIR/<MODE>-rank<R>.pt.
"""

import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP

from qvgen.auxiliary import AuxConfig, DecaySchedule, apply_, attach_, rank_at, required_steps
from qvgen.auxiliary.testing import tiny_quantized_mlp

WORLD = 2


def worker(rank: int, out_dir: str, modes: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{out_dir}/rendezvous", rank=rank, world_size=WORLD)
    for mode in modes.split(","):
        train(rank, Path(out_dir) / f"{mode}-rank{rank}.pt", mode)
    dist.destroy_process_group()


def train(rank: int, out: Path, mode: str) -> None:
    torch.manual_seed(0)
    model = tiny_quantized_mlp()
    schedule = DecaySchedule(initial_rank=8, period=3)
    branches = attach_(model, AuxConfig(decay=schedule, mode=mode))  # type: ignore[arg-type]
    ddp = DDP(model)
    optimizer = torch.optim.Adam(ddp.parameters(), lr=1e-2)
    widths: list[list[int]] = []
    phi_grads_agree: list[bool] = []
    for step in range(required_steps(schedule)):
        if apply_(branches, rank_at(step, schedule), optimizer):
            ddp = DDP(model)  # Parameters were replaced or removed: DDP must reduce the new set
        x = torch.randn(8, 64, generator=torch.Generator().manual_seed(1000 * rank + step))
        optimizer.zero_grad()
        ddp(x).square().mean().backward()
        if branches:
            grad = next(iter(branches.values())).L.grad
            assert grad is not None
            gathered = [torch.empty_like(grad) for _ in range(WORLD)]
            dist.all_gather(gathered, grad)
            phi_grads_agree.append(bool(torch.equal(gathered[0], gathered[1])))
        optimizer.step()
        widths.append([b.width for b in branches.values()])
    torch.save(
        {"state": model.state_dict(), "widths": widths, "phi_grads_agree": phi_grads_agree},
        out,
    )


if __name__ == "__main__":
    mp.spawn(worker, args=(sys.argv[1], sys.argv[2]), nprocs=WORLD, join=True)
