"""FSDP2 for the student (`train.sharding: fsdp2`): torch's `fully_shard`, Φ replicated outside the shards.

accelerate's FSDP plugin never engages on CPU (MULTI_CPU stays DDP), so the recipe shards the student
itself; the same code runs on CPU processes (gloo) and GPUs (nccl), and is tested on the former. Each
child block of the transformer (every element of a top-level `nn.ModuleList`) and then the root get
`fully_shard`; Φ's L, R are `ignored_params` (plain replicated tensors that `apply_` can shrink, gradients
averaged by `qvgen.auxiliary.all_reduce_grads_`). The teacher is not sharded.

Checkpoints: every process writes its own shards of the model and the optimizer state as safetensors
(`model-rank<R>`, `optimizer-rank<R>`) and rank 0 the optimizer's param groups and the scheduler as JSON,
so nothing is pickled; resuming needs the same world size (checked by `check_compatible`), hence the
same sharding.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

from qvgen.auxiliary import lowrank_parameters

MODEL_SHARD = "model-rank{rank}.safetensors"
OPTIMIZER_SHARD = "optimizer-rank{rank}.safetensors"
OPTIMIZER_GROUPS = "optimizer-groups.json"
SCHEDULER = "scheduler.json"


def shard_student_(model: nn.Module, device: torch.device) -> None:
    """Move `model` to `device`, then `fully_shard` each top-level block and the root; Φ stays out."""
    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError("train.sharding=fsdp2 needs several processes: launch with `accelerate launch`")
    model.to(device)
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    phi = set(lowrank_parameters(model))
    for child in model.children():
        if isinstance(child, nn.ModuleList):
            for block in child:
                fully_shard(block, mesh=mesh, ignored_params=phi & set(block.parameters()))
    fully_shard(model, mesh=mesh, ignored_params=phi)


def _local(t: Tensor) -> Tensor:
    return t.to_local() if isinstance(t, DTensor) else t


@torch.no_grad()
def clip_grad_norm_(parameters: Iterable[nn.Parameter], max_norm: float) -> Tensor:
    """`torch.nn.utils.clip_grad_norm_` (L2, eps 1e-6) over sharded DTensor and replicated plain grads.

    Sharded grads contribute their local squares, summed over processes in one all-reduce; replicated
    ones (Φ, already averaged) are counted once. Returns the total norm.
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    sharded = [g.to_local() for g in grads if isinstance(g, DTensor)]
    plain = [g for g in grads if not isinstance(g, DTensor)]
    device = grads[0].device if grads else torch.device("cpu")
    sq = _sum_of_squares(sharded, device)
    dist.all_reduce(sq)
    total = (sq + _sum_of_squares(plain, device)).sqrt()
    # no host read of the norm (a sync every step): scale by min(1, coef) on the device
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    local = sharded + plain
    if local:
        torch._foreach_mul_(local, coef.to(local[0].dtype))
    return total


def _sum_of_squares(tensors: list[Tensor], device: torch.device) -> Tensor:
    if not tensors:
        return torch.zeros((), dtype=torch.float32, device=device)
    norms = torch._foreach_norm([t.float() for t in tensors])
    return torch.stack(norms).pow(2).sum()


def save_sharded_state(folder: Path, model: nn.Module, optimizer: Any, scheduler: Any, rank: int) -> None:
    """This process's model and optimizer shards (+ on rank 0 the groups and scheduler) into `folder`."""
    state = {k: _local(v).detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(folder / MODEL_SHARD.format(rank=rank)))
    opt = optimizer.state_dict()
    tensors = {
        f"{index}.{key}": _local(value).detach().contiguous().cpu()
        for index, per_param in opt["state"].items()
        for key, value in per_param.items()
    }
    save_file(tensors, str(folder / OPTIMIZER_SHARD.format(rank=rank)))
    if rank == 0:
        (folder / OPTIMIZER_GROUPS).write_text(json.dumps(opt["param_groups"], indent=1))
        (folder / SCHEDULER).write_text(json.dumps(scheduler.state_dict(), indent=1))


@torch.no_grad()
def load_sharded_state(folder: Path, model: nn.Module, optimizer: Any, scheduler: Any, rank: int) -> None:
    """Restore what `save_sharded_state` wrote, into the identically sharded model and optimizer."""
    path = folder / MODEL_SHARD.format(rank=rank)
    saved = load_file(str(path))
    current = model.state_dict()
    if missing := sorted(set(current) ^ set(saved)):
        raise ValueError(f"{path}: tensors differ from the sharded student: {missing[:5]}")
    for key, value in current.items():
        local = _local(value)
        if tuple(local.shape) != tuple(saved[key].shape):
            raise ValueError(
                f"{path}: {key} is {tuple(saved[key].shape)} here but {tuple(local.shape)} in this process's "
                "shard; resume with the same number of processes"
            )
        local.copy_(saved[key])
    params = [p for group in optimizer.param_groups for p in group["params"]]
    shards = load_file(str(folder / OPTIMIZER_SHARD.format(rank=rank)))
    state: dict[int, dict[str, Tensor]] = {}
    for name, tensor in shards.items():
        index, key = name.split(".", 1)
        param = params[int(index)]
        if isinstance(param, DTensor) and tensor.dim() > 0:
            tensor = DTensor.from_local(
                tensor.to(param.device), param.device_mesh, param.placements, run_check=False,
                shape=param.shape, stride=param.stride(),
            )  # fmt: skip
        state.setdefault(int(index), {})[key] = tensor
    groups = json.loads((folder / OPTIMIZER_GROUPS).read_text())
    for group in groups:
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    scheduler.load_state_dict(json.loads((folder / SCHEDULER).read_text()))


def gather_full_state(model: nn.Module) -> dict[str, Tensor]:
    """The unsharded state dict on CPU (collective: every process must call it, in the same order)."""
    out = {}
    for key, value in model.state_dict().items():
        full = value.full_tensor() if isinstance(value, DTensor) else value
        out[key] = full.detach().cpu()
    return out
