"""Where a low-bit student's error comes from on the embedded teacher, and how much of it Φ can take.

The measured "why" behind paper_table's QVGen ≈ LSQ (issue 11). No training: every row is the teacher's
transformer quantized and initialised the way QAT starts (LSQ+ weights, MSE-initialised; clipped dynamic
per-token activations), measured on noised held-out latents.

1. **Denoiser error budget**: relative MSE Σ(student − teacher)² / Σ teacher² of the velocity, per sample, on
   held-out latents (procedural world 5000, encoded by the teacher's VAE + UMT5) at the training timesteps,
   for W{b}A{b}, the weights alone at b bits (W{b}A16: activations unquantized) and the activations alone
   (W8A{b}: weights at 8 bits, whose error is 1/256 of 4-bit's in MSE), and W{b}A{b} / W{b}A16 with Φ
   attached at init (QVGen's first step: Φ = SVD_r(W − Q(W))), r = r0. Mean ± 95 % t interval over samples;
   ratios against W{b}A{b} paired over the same samples.
2. **Spectrum of the weight error**: for every quantized linear, the share of ‖W − Q(W)‖² in its top-r singular
   values (what Φ removes at init), against a Gaussian matrix of the same shape (white noise).

Prints the tables and the last line
`error_budget w4_weights_only_share=… w4_acts_only_share=… w4_phi_init_share=… phi_r8_energy_share=…
gaussian_r8_energy_share=… …`.
Usage: python benchmarks/error_budget.py [--clips 64] [--timesteps 4] [--bits 4 3] [--rank 8] [--out DIR]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch
from torch import nn

from qvgen.auxiliary import AuxConfig, DecaySchedule, attach_
from qvgen.data import LoaderConfig, make_loader
from qvgen.demo import DEFAULT_TEACHER_DIR, build_shards
from qvgen.eval import MeanCI, mean_ci, paired_diff_ci
from qvgen.models import get_family
from qvgen.quant import (
    ClippedDynamicActivation,
    LSQPlusWeight,
    NoActivationQuant,
    QuantConfig,
    initialize_,
    prepare_,
    quantized_layers,
)

HELD_OUT_WORLD = 5000
"""paper_table's held-out world (its prompts' captions); the students never trained on it."""
SPECTRUM_RANKS = (4, 8, 32, 64)


@dataclass(frozen=True)
class Row:
    """One quantized variant of the teacher: weight bits, activation bits (None: unquantized), Φ's rank."""

    weight_bits: int
    act_bits: int | None
    phi_rank: int = 0

    @property
    def label(self) -> str:
        base = f"W{self.weight_bits}A{self.act_bits or 16}"
        return base + (f" + Φ r={self.phi_rank} at init" if self.phi_rank else "")


def rows_for(bits: int, rank: int) -> list[Row]:
    return [Row(bits, bits), Row(bits, None), Row(8, bits), Row(bits, bits, rank), Row(bits, None, rank)]


def quantized_student(teacher: nn.Module, row: Row, family) -> nn.Module:
    """A float32 copy of `teacher` quantized and initialised like QAT's first step (Φ attached if asked)."""
    student = copy.deepcopy(teacher).float()
    activation = NoActivationQuant() if row.act_bits is None else ClippedDynamicActivation(bits=row.act_bits)
    cfg = QuantConfig(weight=LSQPlusWeight(bits=row.weight_bits), activation=activation)
    prepare_(student, cfg, layer_roles=family.layer_roles, keep_high_precision=family.keep_high_precision,
             num_train_timesteps=family.num_train_timesteps)  # fmt: skip
    initialize_(student, progress=False)
    if row.phi_rank:
        attach_(student, AuxConfig(decay=DecaySchedule(initial_rank=row.phi_rank, period=1)))
    return student.eval().requires_grad_(False)


def held_out_inputs(teacher_dir: Path, out: Path, clips: int, timesteps: int, seed: int = 0):
    """(noised inputs, text embeddings, lengths) batches: every held-out clip at `timesteps` training
    timesteps (one posterior sample and noise draw each, from a fixed generator)."""
    family = get_family("wan")
    shards = build_shards(teacher_dir, out, clips, seed=HELD_OUT_WORLD)
    vae_config = json.loads((teacher_dir / "vae" / "config.json").read_text())  # latents_mean / latents_std
    generator = torch.Generator().manual_seed(seed)
    batches = []
    loader = make_loader(
        LoaderConfig(shards=shards, batch_size=8, mode="eval", num_workers=0, drop_last=False)
    )
    for batch in loader:
        for _ in range(timesteps):
            latents = family.normalize_latents(batch.sample_latents(generator), vae_config)
            noise = torch.randn(latents.shape, generator=generator)
            t = family.sample_timesteps(latents.shape[0], generator)
            batches.append(
                (family.noised_inputs(latents, noise, t), batch.text_embeddings.float(), batch.text_lengths)
            )
    return batches


@torch.no_grad()
def relative_errors(
    student: nn.Module, teacher: nn.Module, batches, targets: list[torch.Tensor]
) -> list[float]:
    family = get_family("wan")
    out: list[float] = []
    for (x, text, lengths), target in zip(batches, targets, strict=True):
        pred = family.predict(student, x, text, lengths)
        num = (pred - target).pow(2).flatten(1).sum(1)
        out += (num / target.pow(2).flatten(1).sum(1)).tolist()
    return out


@torch.no_grad()
def spectrum_shares(student: nn.Module, ranks: tuple[int, ...], seed: int = 0) -> dict[str, list[float]]:
    """Per layer, the share of ‖W − Q(W)‖² in its top-r singular values, and a Gaussian's of the same shape."""
    generator = torch.Generator().manual_seed(seed)
    shares: dict[str, list[float]] = {f"error_r{r}": [] for r in ranks} | {f"gauss_r{r}": [] for r in ranks}
    for layer in quantized_layers(student).values():
        error = layer.weight.detach().float() - layer.quantized_weight().float()
        noise = torch.randn(error.shape, generator=generator)
        for kind, matrix in (("error", error), ("gauss", noise)):
            energy = torch.linalg.svdvals(matrix).pow(2)
            for r in ranks:
                shares[f"{kind}_r{r}"].append(float(energy[:r].sum() / energy.sum()))
    return shares


def fmt(ci: MeanCI, digits: int = 4) -> str:
    return f"{ci.mean:.{digits}f}" + ("" if ci.ci95 is None else f" ± {ci.ci95:.{digits}f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", type=Path, default=DEFAULT_TEACHER_DIR)
    parser.add_argument("--out", type=Path, default=Path("outputs/error_budget"), help="work folder (shards)")
    parser.add_argument("--clips", type=int, default=64, help="held-out clips")
    parser.add_argument("--timesteps", type=int, default=4, help="noise levels per clip")
    parser.add_argument("--bits", type=int, nargs="+", default=[4, 3], choices=(3, 4))
    parser.add_argument("--rank", type=int, default=8, help="Φ's r0 (paper_table's: 8)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    family = get_family("wan")
    teacher = family.load_transformer(args.teacher, dtype="float32").eval().requires_grad_(False)
    batches = held_out_inputs(args.teacher, args.out, args.clips, args.timesteps)
    with torch.no_grad():
        targets = [family.predict(teacher, x, text, lengths) for x, text, lengths in batches]
    n = sum(t.shape[0] for t in targets)
    print(f"error_budget: {args.clips} held-out clips × {args.timesteps} timesteps = {n} samples", flush=True)

    lines = ["| bits | variant | denoiser rel. MSE | share of W{b}A{b}'s (paired ratio of means) |",
             "| --- | --- | ---: | ---: |"]  # fmt: skip
    key: dict[str, float] = {}
    spectra: dict[str, list[float]] = {}
    for bits in args.bits:
        errors = {}
        for row in rows_for(bits, args.rank):
            student = quantized_student(teacher, row, family)
            errors[row] = relative_errors(student, teacher, batches, targets)
            if row == Row(bits, bits) and not spectra:
                spectra = spectrum_shares(student, SPECTRUM_RANKS)
        full = mean_ci(errors[Row(bits, bits)])
        for row, values in errors.items():
            ci = mean_ci(values)
            share = ci.mean / full.mean
            diff = paired_diff_ci(values, errors[Row(bits, bits)])
            note = "—" if row == Row(bits, bits) else f"{share:.3f} (Δ {fmt(diff)})"
            lines.append(f"| W{bits}A{bits} | {row.label} | {fmt(ci)} | {note} |")
            tag = {Row(bits, None): "weights_only", Row(8, bits): "acts_only", Row(bits, bits, args.rank): "phi_init",
                   Row(bits, None, args.rank): "weights_only_phi_init"}.get(row)  # fmt: skip
            if tag is not None:
                key[f"w{bits}_{tag}_share"] = share
        key[f"w{bits}a{bits}_rel_mse"] = full.mean

    spectrum = ["| r | share of ‖W − Q(W)‖² in the top r (mean over layers, min–max) | Gaussian, same shapes |",
                "| ---: | ---: | ---: |"]  # fmt: skip
    for r in SPECTRUM_RANKS:
        e, g = spectra[f"error_r{r}"], spectra[f"gauss_r{r}"]
        spectrum.append(
            f"| {r} | {sum(e) / len(e):.3f} ({min(e):.3f}–{max(e):.3f}) | {sum(g) / len(g):.3f} |"
        )
    r = args.rank if args.rank in SPECTRUM_RANKS else 8
    key[f"phi_r{r}_energy_share"] = sum(spectra[f"error_r{r}"]) / len(spectra[f"error_r{r}"])
    key[f"gaussian_r{r}_energy_share"] = sum(spectra[f"gauss_r{r}"]) / len(spectra[f"gauss_r{r}"])
    print("\n".join(lines), "", f"Weight error spectrum (W{args.bits[0]}, {len(spectra['error_r4'])} layers):",
          "\n".join(spectrum), "", f"({(time.perf_counter() - start) / 60:.1f} min)", sep="\n")  # fmt: skip
    print("error_budget " + " ".join(f"{k}={v:.4f}" for k, v in key.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
