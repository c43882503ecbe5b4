"""Sampling quantized video DiTs, offline fidelity metrics, VBench adapter and HTML report."""

from qvgen.eval.compare import Contender, compare, compare_models
from qvgen.eval.config import (
    CompareConfig,
    DeployModel,
    FakeQuantModel,
    FullPrecisionModel,
    ModelSource,
    PromptSource,
    SampleConfig,
    SamplingSettings,
    Variant,
    load_config,
)
from qvgen.eval.loading import LoadedModel, from_components, load_model
from qvgen.eval.metrics import (
    StepError,
    TransformerCall,
    latent_mse,
    motion_energy,
    motion_energy_ratio,
    psnr,
    record_transformer_calls,
    ssim,
    step_errors,
    temporal_flickering,
)
from qvgen.eval.probes import ClipGroupCall, record_clip_groups
from qvgen.eval.prompts import SampleItem, load_prompts, plan_items, video_filename
from qvgen.eval.report import EvalReport, load_report, render_html, write_report
from qvgen.eval.sample import Generated, SampleResult, generate, pipeline_kwargs, sample, sample_items
from qvgen.eval.vbench import (
    VBenchConfig,
    VBenchReport,
    aggregate,
    check_weights,
    missing_weights,
    parse_results,
    run_vbench,
)
from qvgen.eval.video import read_video, write_video

__all__ = [
    "ClipGroupCall",
    "CompareConfig",
    "Contender",
    "DeployModel",
    "EvalReport",
    "FakeQuantModel",
    "FullPrecisionModel",
    "Generated",
    "LoadedModel",
    "ModelSource",
    "PromptSource",
    "SampleConfig",
    "SampleItem",
    "SampleResult",
    "SamplingSettings",
    "StepError",
    "TransformerCall",
    "VBenchConfig",
    "VBenchReport",
    "Variant",
    "aggregate",
    "check_weights",
    "compare",
    "compare_models",
    "from_components",
    "generate",
    "latent_mse",
    "load_config",
    "load_model",
    "load_prompts",
    "load_report",
    "missing_weights",
    "motion_energy",
    "motion_energy_ratio",
    "parse_results",
    "pipeline_kwargs",
    "plan_items",
    "psnr",
    "read_video",
    "record_clip_groups",
    "record_transformer_calls",
    "render_html",
    "run_vbench",
    "sample",
    "sample_items",
    "ssim",
    "step_errors",
    "temporal_flickering",
    "video_filename",
    "write_report",
    "write_video",
]

# Prompt adherence for qvgen.data's procedural world (adherence.py). The caption grammar belongs to
# qvgen.data (`parse_caption`, `CaptionGrammarError`); they are re-exported here for existing callers.
from qvgen.data import CaptionGrammarError, parse_caption
from qvgen.eval.adherence import (
    ATTRIBUTES,
    AdherenceConfig,
    AdherenceReport,
    Attribute,
    ObjectAdherence,
    TrackedObject,
    VideoAdherence,
    chance_levels,
    change_attribute,
    find_objects,
    score_video,
    score_videos,
    summarize_adherence,
)

__all__ += [
    "ATTRIBUTES",
    "AdherenceConfig",
    "AdherenceReport",
    "Attribute",
    "CaptionGrammarError",
    "ObjectAdherence",
    "TrackedObject",
    "VideoAdherence",
    "chance_levels",
    "change_attribute",
    "find_objects",
    "parse_caption",
    "score_video",
    "score_videos",
    "summarize_adherence",
]
