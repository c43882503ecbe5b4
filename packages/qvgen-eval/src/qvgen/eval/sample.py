"""Sampling: a full-precision, fake-quant or deploy model in its family's diffusers pipeline → mp4 files.

Each video has its own seed (`plan_items`), so the output does not depend on how many processes share
the work; under `accelerate launch` the work list is split across ranks with nothing done twice.
Every video gets a sidecar (`qvgen.eval.sidecar`); a rerun reuses a video only when its sidecar matches, and
refuses (or, with `on_change="resample"`, resamples) the others. The output folder is claimed with
`qvgen.core.claim_output_dir`: never a folder a user or another tool filled, never over the model.
Activation quantizers take their timestep group from the `timestep` of each transformer call
(`qvgen.quant.attach_timestep_context_`), which is right under CFG whatever the batching.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal

import numpy as np
import torch
from torch import Tensor

from qvgen.core import Provenance, claim_output_dir
from qvgen.eval.config import PromptSource, SampleConfig, SamplingSettings
from qvgen.eval.loading import LoadedModel, base_folder, load_model, model_facts
from qvgen.eval.prompts import SampleItem, load_prompts, plan_items
from qvgen.eval.sidecar import (
    SAMPLE_TOOL,
    sort_videos,
    stale_videos_error,
    video_provenance,
    write_video_with_sidecar,
)
from qvgen.models import FAMILIES

logger = logging.getLogger(__name__)

DEFAULT_FPS: Final[Mapping[str, int]] = MappingProxyType({n: f.default_fps for n, f in FAMILIES.items()})
"""`ModelFamily.default_fps` by family name (the owner is the family; `sample_items` reads it there)."""


@dataclass(frozen=True, slots=True)
class Generated:
    """One generated video: frames `[F, H, W, 3]` float32 in [0, 1] and the final latents (CPU, float32)."""

    frames: np.ndarray
    latents: Tensor


@dataclass(frozen=True, slots=True)
class SampleResult:
    """What this process did."""

    rank: int
    world_size: int
    written: tuple[Path, ...]
    skipped: tuple[Path, ...]


def pipeline_kwargs(model: LoadedModel, settings: SamplingSettings) -> dict[str, Any]:
    """The family's defaults updated with the explicitly set `settings`.

    Also switches the transformer to `settings.attention_backend` when one is named (`use_attention_backend`).
    """
    if settings.attention_backend is not None:
        use_attention_backend(model.components.transformer, settings.attention_backend)
    return model.family.sample_kwargs(model.components, **settings.pipeline_overrides(model.family.name))


def use_attention_backend(transformer: Any, backend: str) -> None:
    """`transformer.set_attention_backend(backend)` (diffusers); an unknown or unusable one is a `ValueError`."""
    setter = getattr(transformer, "set_attention_backend", None)
    if setter is None:
        raise ValueError(
            f"sampling.attention_backend={backend!r}: {type(transformer).__name__} is not a diffusers model "
            "with attention backends; remove the setting"
        )
    try:
        setter(backend)
    except (ValueError, RuntimeError, ImportError) as e:
        raise ValueError(
            f"sampling.attention_backend={backend!r} is not available here: {e} "
            "(remove the setting to use diffusers' native attention)"
        ) from e


@torch.no_grad()
def generate(model: LoadedModel, item: SampleItem, kwargs: dict[str, Any]) -> Generated:
    """Run the pipeline once for `item` with a CPU generator seeded by `item.seed`."""
    final: dict[str, Tensor] = {}

    def keep_latents(pipe: Any, step: int, t: Any, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
        final["latents"] = tensors["latents"]
        return {}

    out = model.pipeline(
        prompt=item.prompt,
        generator=torch.Generator("cpu").manual_seed(item.seed),
        output_type="np",
        callback_on_step_end=keep_latents,
        callback_on_step_end_tensor_inputs=["latents"],
        **kwargs,
    )
    frames = np.asarray(out.frames[0], dtype=np.float32)
    if "latents" not in final:
        raise RuntimeError("the pipeline ran no denoising step; check num_inference_steps")
    return Generated(frames=frames, latents=final["latents"].detach().to("cpu", torch.float32))


def resolve_prompts(cfg_prompts: PromptSource) -> list[str]:
    """The prompt list of a `PromptSource`."""
    if cfg_prompts.file is not None:
        return load_prompts(cfg_prompts.file, cfg_prompts.dimensions)
    return list(dict.fromkeys(cfg_prompts.prompts))


OnChange = Literal["error", "resample"]
"""What a rerun does with a video whose sidecar differs from the current inputs (or that has none)."""

RESAMPLE_REMEDY: Final = (
    "resample just those with `qvgen-eval sample CONFIG --overwrite` (or `on_change: resample`), "
    "or choose a new out_dir"
)


def plan_videos(
    family: str,
    model: dict[str, str],
    items: list[SampleItem],
    out_dir: Path,
    settings: SamplingSettings,
    tool: str = SAMPLE_TOOL,
) -> list[tuple[Path, Provenance]]:
    """Each item's video path in `out_dir` and the sidecar it must carry to be reused."""
    fps = settings.fps or DEFAULT_FPS[family]
    return [(out_dir / i.filename, video_provenance(tool, family, model, i, settings, fps)) for i in items]


def check_rerun(
    planned: list[tuple[Path, Provenance]], out_dir: Path, on_change: OnChange
) -> tuple[set[Path], set[Path]]:
    """(reusable, to resample) of the planned videos that exist; `ProvenanceMismatch` listing the stale
    videos and what changed when there are any and `on_change` is "error"."""
    fresh, stale = sort_videos(planned)
    if stale and on_change == "error":
        raise stale_videos_error(out_dir, stale, RESAMPLE_REMEDY)
    return fresh, set(stale)


def sample_items(
    model: LoadedModel,
    items: list[SampleItem],
    out_dir: Path,
    settings: SamplingSettings,
    *,
    skip_existing: bool = True,
    on_change: OnChange = "error",
) -> tuple[list[Path], list[Path]]:
    """Generate and write `items` into `out_dir`, each video with its sidecar; return (written, skipped).

    An existing video is skipped only when its sidecar equals the one this model, item and `settings`
    give. Any other existing video (no sidecar, or one naming another model, seed, setting) is a
    `ProvenanceMismatch` before anything is sampled, or with `on_change="resample"` is sampled again.
    `skip_existing=False` samples every item again.
    """
    planned = plan_videos(model.family.name, model.identity(), items, out_dir, settings)
    fresh, stale = check_rerun(planned, out_dir, on_change) if skip_existing else (set(), set())
    if stale:
        logger.warning(
            "resampling %d video(s) in %s whose sidecar differs (on_change=resample)", len(stale), out_dir
        )
    kwargs = pipeline_kwargs(model, settings)
    fps = settings.fps or model.family.components_fps(model.components)
    written, skipped = [], []
    for item, (path, provenance) in zip(items, planned, strict=True):
        if path in fresh:
            skipped.append(path)
            continue
        video = generate(model, item, kwargs)
        written.append(write_video_with_sidecar(video.frames, path, fps, provenance))
        logger.info("wrote %s (seed %d)", path, item.seed)
    return written, skipped


def _device(state: Any, requested: str) -> torch.device:
    return state.device if requested == "auto" else torch.device(requested)


def sample(cfg: SampleConfig) -> SampleResult:
    """`qvgen-eval sample`: this process's share of the videos of `cfg`, written to `cfg.out_dir`.

    Before any model loads: the output folder is claimed (`claim_output_dir`: not the model's folder nor
    inside or around it, empty or already `qvgen-eval sample`'s) and every existing video's sidecar is
    checked (all ranks check all videos, so all fail alike)."""
    from accelerate import PartialState

    state = PartialState(cpu=cfg.device == "cpu" or not torch.cuda.is_available())
    items = plan_items(resolve_prompts(cfg.prompts), cfg.prompts.videos_per_prompt, cfg.seed)
    inputs = (cfg.model.path, base_folder(cfg.model), cfg.prompts.file)
    with state.main_process_first():  # rank 0 creates and marks the folder; the others then find its marker
        out_dir = claim_output_dir(cfg.out_dir, SAMPLE_TOOL, inputs=inputs, what="sample out_dir")
    if cfg.skip_existing:
        facts = model_facts(cfg.family, cfg.model, cfg.dtype)
        check_rerun(plan_videos(cfg.family, facts, items, out_dir, cfg.sampling), out_dir, cfg.on_change)
    state.wait_for_everyone()  # every rank has checked the folder as it was before any rank writes to it
    model = load_model(cfg.family, cfg.model, cfg.dtype, _device(state, cfg.device))
    with state.split_between_processes(items) as mine:
        written, skipped = sample_items(
            model, list(mine), out_dir, cfg.sampling, skip_existing=cfg.skip_existing, on_change=cfg.on_change
        )
    state.wait_for_everyone()
    return SampleResult(state.process_index, state.num_processes, tuple(written), tuple(skipped))
