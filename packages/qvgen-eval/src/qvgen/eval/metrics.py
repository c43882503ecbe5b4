"""Offline fidelity metrics: per video (flickering, motion energy) and against the teacher at one seed.

Video metrics take frames as arrays `[F, H, W, 3]`: uint8 for the VBench-style flickering score (VBench
scores the decoded mp4), float in [0, 1] or uint8 elsewhere. Everything is computed in float64.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

PSNR_MAX_DB = 100.0
"""PSNR of identical frames (the MSE is floored at 1e-10 so the report stays finite JSON)."""


def _as_unit_float(frames: np.ndarray) -> np.ndarray:
    arr = np.asarray(frames)
    if arr.ndim != 4:
        raise ValueError(f"expected frames of shape [F, H, W, C], got {arr.shape}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float64) / 255.0
    return arr.astype(np.float64)


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"videos differ in shape: {a.shape} vs {b.shape}; sample both at the same size")


def temporal_flickering(frames: np.ndarray) -> float:
    """VBench's temporal flickering score of one video (higher is steadier, 1.0 is a still video).

    The mean absolute difference between consecutive uint8 frames on the 0–255 scale, averaged over the
    frame pairs, mapped to ``(255 - mean) / 255``.
    """
    arr = np.asarray(frames)
    if arr.dtype != np.uint8:
        raise ValueError(
            f"temporal_flickering takes uint8 frames (as decoded from the video), got {arr.dtype}"
        )
    if arr.ndim != 4 or arr.shape[0] < 2:
        raise ValueError(f"temporal_flickering needs frames [F >= 2, H, W, C], got shape {arr.shape}")
    x = arr.astype(np.float64)
    per_pair = np.abs(x[1:] - x[:-1]).reshape(arr.shape[0] - 1, -1).mean(axis=1)
    return float((255.0 - per_pair.mean()) / 255.0)


def motion_energy(frames: np.ndarray) -> float:
    """Mean absolute change between consecutive frames, on the [0, 1] scale (0 for a frozen video)."""
    x = _as_unit_float(frames)
    if x.shape[0] < 2:
        raise ValueError(f"motion_energy needs at least 2 frames, got shape {x.shape}")
    return float(np.abs(x[1:] - x[:-1]).mean())


def motion_energy_ratio(student: np.ndarray, teacher: np.ndarray, eps: float = 1e-8) -> float:
    """Student motion energy / teacher motion energy: ~1 is faithful, →0 frozen, ≫1 added noise/jitter."""
    _check_pair(np.asarray(student), np.asarray(teacher))
    return motion_energy(student) / max(motion_energy(teacher), eps)


def psnr(student: np.ndarray, teacher: np.ndarray) -> float:
    """PSNR in dB of `student` vs `teacher` frames, peak 1.0 (uint8 frames are divided by 255)."""
    a, b = _as_unit_float(student), _as_unit_float(teacher)
    _check_pair(a, b)
    mse = max(float(np.mean((a - b) ** 2)), 1e-10)
    return float(min(10.0 * np.log10(1.0 / mse), PSNR_MAX_DB))


def _gaussian_window(size: int, sigma: float) -> Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)


def ssim(student: np.ndarray, teacher: np.ndarray, window: int = 11, sigma: float = 1.5) -> float:
    """Mean SSIM over frames and channels (Wang et al. 2004: Gaussian 11×11, σ=1.5, K=(0.01, 0.03), range 1).

    Computed on the valid region of the window; frames must be at least `window` pixels on each side.
    """
    a, b = _as_unit_float(student), _as_unit_float(teacher)
    _check_pair(a, b)
    if min(a.shape[1], a.shape[2]) < window:
        raise ValueError(f"frames {a.shape[2]}x{a.shape[1]} are smaller than the SSIM window {window}")
    c1, c2 = 0.01**2, 0.03**2
    x = torch.from_numpy(a).permute(0, 3, 1, 2).reshape(-1, 1, a.shape[1], a.shape[2])
    y = torch.from_numpy(b).permute(0, 3, 1, 2).reshape(-1, 1, b.shape[1], b.shape[2])
    w = _gaussian_window(window, sigma)[None, None]
    mu_x, mu_y = F.conv2d(x, w), F.conv2d(y, w)
    var_x = F.conv2d(x * x, w) - mu_x**2
    var_y = F.conv2d(y * y, w) - mu_y**2
    cov = F.conv2d(x * y, w) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(s.mean())


def latent_mse(student: Tensor, teacher: Tensor) -> float:
    """Mean squared difference of the final latents of two runs at the same seed."""
    if student.shape != teacher.shape:
        raise ValueError(f"latents differ in shape: {tuple(student.shape)} vs {tuple(teacher.shape)}")
    return float(torch.mean((student.double() - teacher.double()) ** 2))


# --- denoiser outputs along the sampling trajectory ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TransformerCall:
    """One recorded transformer call: its timesteps `[B]` and output, both on the CPU in float32."""

    timestep: Tensor
    output: Tensor


@dataclass(frozen=True, slots=True)
class StepError:
    """Denoiser output error of one sampling step (all transformer calls at that timestep)."""

    step: int
    timestep: float
    mse: float
    relative_mse: float
    """sum of squared differences / sum of squared teacher outputs."""


def _first_output(output: Any) -> Tensor:
    if isinstance(output, Tensor):
        return output
    if isinstance(output, tuple | list) and output and isinstance(output[0], Tensor):
        return output[0]
    sample = getattr(output, "sample", None)
    if isinstance(sample, Tensor):
        return sample
    raise TypeError(f"cannot find the denoiser output tensor in a {type(output).__name__}")


@contextmanager
def record_transformer_calls(transformer: nn.Module) -> Iterator[list[TransformerCall]]:
    """Record every call of `transformer` (its `timestep` argument and output) while the block runs."""
    calls: list[TransformerCall] = []

    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        t = kwargs.get("timestep")
        if t is None:
            raise RuntimeError(
                f"{type(module).__name__} was called without a `timestep` keyword; the trajectory "
                "recorder needs the pipeline to pass it by name"
            )
        out = _first_output(output).detach().to("cpu", torch.float32)
        calls.append(TransformerCall(torch.as_tensor(t).detach().reshape(-1).to("cpu", torch.float64), out))

    handle = transformer.register_forward_hook(hook, with_kwargs=True)
    try:
        yield calls
    finally:
        handle.remove()


def _steps(calls: Sequence[TransformerCall]) -> list[list[int]]:
    """Consecutive calls sharing the first timestep form one step (Wan calls twice per step under CFG)."""
    groups: list[list[int]] = []
    last: float | None = None
    for i, c in enumerate(calls):
        t = float(c.timestep[0])
        if last is None or t != last:
            groups.append([])
            last = t
        groups[-1].append(i)
    return groups


def step_errors(student: Sequence[TransformerCall], teacher: Sequence[TransformerCall]) -> list[StepError]:
    """Per-step denoiser output error of `student` vs `teacher`, both recorded at the same seed."""
    if len(student) != len(teacher):
        raise ValueError(
            f"student made {len(student)} transformer calls, teacher {len(teacher)}: sample both with the "
            "same scheduler, steps and guidance"
        )
    out: list[StepError] = []
    for k, idx in enumerate(_steps(teacher)):
        sq = ref = 0.0
        n = 0
        for i in idx:
            s, t = student[i], teacher[i]
            if not torch.equal(s.timestep, t.timestep):
                raise ValueError(
                    f"transformer call {i} ran at timestep {s.timestep.tolist()} for the student but "
                    f"{t.timestep.tolist()} for the teacher"
                )
            if s.output.shape != t.output.shape:
                raise ValueError(f"call {i}: output shapes differ: {s.output.shape} vs {t.output.shape}")
            d = s.output.double() - t.output.double()
            sq += float((d * d).sum())
            ref += float((t.output.double() ** 2).sum())
            n += d.numel()
        out.append(
            StepError(
                step=k,
                timestep=float(teacher[idx[0]].timestep[0]),
                mse=sq / n,
                relative_mse=sq / max(ref, 1e-30),
            )
        )
    return out
