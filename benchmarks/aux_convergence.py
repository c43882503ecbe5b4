"""Does Φ + rank decay help QAT converge? Distil a small float MLP-block stack into its W4A4 / W3A3 copy.

For each bit width, two students start from the same calibrated fake-quant copy of the teacher and see
the same batches (same seeds): one plain QAT, one with Φ = SVD_r(W − Q(W)) decayed to rank 0 by the
schedule of docs/method.md §6 (period chosen so Φ is gone before the last step). Reported per run: the mean
gradient norm of the latent weights W over the first 10% of steps, the final held-out distillation loss
(Φ already removed), and the final rank. The last line aggregates both bit widths (geometric mean of the
ratios) in the fixed format `aux_convergence grad_norm_ratio=... final_loss_ratio=... final_rank=...`.

    python benchmarks/aux_convergence.py --quick
"""

from __future__ import annotations

import argparse
import copy
import math
import time

import torch
from torch import Tensor, nn

from qvgen.auxiliary import AuxConfig, DecaySchedule, apply_, attach_, lowrank_parameters, rank_at
from qvgen.quant import (
    ClippedDynamicActivation,
    LSQPlusWeight,
    QuantConfig,
    initialize_,
    prepare_,
    quant_parameter_groups,
)


class Block(nn.Module):
    """Pre-norm residual MLP block, the FFN half of a DiT block."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.up = nn.Linear(dim, hidden)
        self.down = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.down(nn.functional.gelu(self.up(self.norm(x))))


def teacher(dim: int, hidden: int, depth: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(*[Block(dim, hidden) for _ in range(depth)], nn.LayerNorm(dim), nn.Linear(dim, dim))


def batch(step: int, size: int, dim: int, outliers: Tensor) -> Tensor:
    """Token batch with a few outlier channels, as DiT activations have."""
    g = torch.Generator().manual_seed(10_000 + step)
    return torch.randn(size, dim, generator=g) * outliers


def student(t: nn.Module, bits: int, act_bits: int) -> nn.Module:
    s = copy.deepcopy(t)
    act = ClippedDynamicActivation(bits=act_bits, groups=1)
    prepare_(s, QuantConfig(weight=LSQPlusWeight(bits=bits), activation=act))
    initialize_(s, progress=False)
    return s


def run(t: nn.Module, bits: int, phi: bool, args: argparse.Namespace, outliers: Tensor) -> dict[str, float]:
    torch.manual_seed(args.seed)
    model = student(t, bits, args.act_bits or bits)
    schedule = DecaySchedule(initial_rank=args.rank, period=period(args))
    branches = attach_(model, AuxConfig(decay=schedule)) if phi else {}
    q = quant_parameter_groups(model)
    phi_params = lowrank_parameters(model)
    grouped = {id(p) for p in [*q.weights, *q.weight_qparams, *q.act_clip, *phi_params]}
    others = [p for p in model.parameters() if id(p) not in grouped]  # biases, LayerNorms
    groups = [
        {"params": q.weights + others},
        {"params": q.weight_qparams},
        {"params": q.act_clip, "lr": args.clip_lr},
    ]
    if phi:
        groups.append({"params": phi_params, "lr": args.phi_lr})
    optimizer = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95), weight_decay=1e-4)
    early = max(1, args.steps // 10)
    grad_norms: list[Tensor] = []
    losses: list[Tensor] = []
    for step in range(args.steps):
        if phi:
            apply_(branches, rank_at(step, schedule), optimizer)
        x = batch(step, args.batch, args.dim, outliers)
        with torch.no_grad():
            target = t(x)
        loss = nn.functional.mse_loss(model(x), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if step < early:
            losses.append(loss.detach())
            grad_norms.append(torch.linalg.vector_norm(torch.stack([w.grad.norm() for w in q.weights])))
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    with torch.no_grad():
        x = batch(-1, 4096, args.dim, outliers)
        final = nn.functional.mse_loss(model(x), t(x)).item()
    return {
        "grad_norm": torch.stack(grad_norms).mean().item(),
        "first_loss": losses[0].item(),
        "early_loss": torch.stack(losses).mean().item(),
        "final_loss": final,
        "final_rank": max((b.width for b in branches.values()), default=0),
    }


def period(args: argparse.Namespace) -> int:
    """T: given, or the longest period that still removes Φ before the last step."""
    return args.period or (args.steps - 1) // args.rank.bit_length()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="the < 3 min CPU setting (default sizes)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--rank", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--phi-lr", type=float, default=3e-4)
    p.add_argument("--clip-lr", type=float, default=1e-2)
    p.add_argument("--bits", type=int, nargs="+", default=[4, 3])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--period", type=int, default=None, help="T (default: (steps - 1) // (log2 r0 + 1))")
    p.add_argument("--act-bits", type=int, default=None, help="activation bits (default: = weight bits)")
    p.add_argument("--outlier", type=float, default=8.0, help="scale of every (dim/4)-th input channel")
    args = p.parse_args(argv)
    if args.steps is None:
        args.steps = 400 if args.quick else 3000
    torch.set_num_threads(1)
    t = teacher(args.dim, args.hidden, args.depth, args.seed).eval()
    outliers = torch.ones(args.dim)
    outliers[:: args.dim // 4] = args.outlier
    print(
        f"steps={args.steps} dim={args.dim} hidden={args.hidden} depth={args.depth} rank={args.rank} "
        f"lr={args.lr} phi_lr={args.phi_lr} period={period(args)}"
    )
    ratios_g, ratios_l, ranks = [], [], []
    start = time.perf_counter()
    for bits in args.bits:
        base = run(t, bits, False, args, outliers)
        with_phi = run(t, bits, True, args, outliers)
        for name, r in (("no-phi", base), ("phi", with_phi)):
            print(
                f"W{bits}A{args.act_bits or bits} {name:6s} early_grad_norm={r['grad_norm']:.4g} first_loss={r['first_loss']:.4g} "
                f"early_loss={r['early_loss']:.4g} final_loss={r['final_loss']:.4g} "
                f"final_rank={r['final_rank']}"
            )
        ratios_g.append(with_phi["grad_norm"] / base["grad_norm"])
        ratios_l.append(with_phi["final_loss"] / base["final_loss"])
        ranks.append(int(with_phi["final_rank"]))
    geo = lambda xs: math.exp(sum(math.log(x) for x in xs) / len(xs))  # noqa: E731
    print(
        f"elapsed={time.perf_counter() - start:.0f}s; ratios are phi/no-phi, geometric mean over W{args.bits}"
    )
    print(
        f"aux_convergence grad_norm_ratio={geo(ratios_g):.4f} final_loss_ratio={geo(ratios_l):.4f} "
        f"final_rank={max(ranks)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
