"""Sampling quantized video DiTs, offline fidelity metrics, VBench adapter and HTML report."""

from qvgen.eval.compare import Contender, GeneratedVideo, compare, compare_models
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
from qvgen.eval.report import (
    EvalReport,
    FidelityMetrics,
    SampleRecord,
    VariantReport,
    VariantSummary,
    VideoMetrics,
    load_report,
    paired_vs_teacher,
    render_html,
    write_report,
)
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
    "FidelityMetrics",
    "FullPrecisionModel",
    "Generated",
    "GeneratedVideo",
    "LoadedModel",
    "ModelSource",
    "PromptSource",
    "SampleConfig",
    "SampleItem",
    "SampleRecord",
    "SampleResult",
    "SamplingSettings",
    "StepError",
    "TransformerCall",
    "VBenchConfig",
    "VBenchReport",
    "Variant",
    "VariantReport",
    "VariantSummary",
    "VideoMetrics",
    "aggregate",
    "check_weights",
    "compare",
    "compare_models",
    "from_components",
    "generate",
    "latent_mse",
    "load_model",
    "load_prompts",
    "load_report",
    "missing_weights",
    "motion_energy",
    "motion_energy_ratio",
    "paired_vs_teacher",
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

# Video sidecars and model identity (sidecar.py, loading.py): what produced each video, checked on reuse.
from qvgen.eval.loading import base_folder, model_facts
from qvgen.eval.sample import OnChange, check_rerun, plan_videos

# Scorers (scorer.py) and confidence intervals (stats.py).
from qvgen.eval.scorer import (
    AdherenceScorer,
    ScoreSummary,
    ValueScores,
    VideoScore,
    VideoScorer,
    score_columns,
    score_values,
    summarize_scores,
)
from qvgen.eval.sidecar import (
    COMPARE_TOOL,
    SAMPLE_TOOL,
    check_video_sidecar,
    sidecar_path,
    video_provenance,
    write_video_with_sidecar,
)
from qvgen.eval.stats import MeanCI, mean_ci, paired_diff_ci, t975

__all__ += [
    "ATTRIBUTES",
    "COMPARE_TOOL",
    "SAMPLE_TOOL",
    "AdherenceConfig",
    "AdherenceReport",
    "AdherenceScorer",
    "Attribute",
    "CaptionGrammarError",
    "MeanCI",
    "ObjectAdherence",
    "OnChange",
    "ScoreSummary",
    "TrackedObject",
    "ValueScores",
    "VideoAdherence",
    "VideoScore",
    "VideoScorer",
    "base_folder",
    "chance_levels",
    "change_attribute",
    "check_rerun",
    "check_video_sidecar",
    "find_objects",
    "mean_ci",
    "model_facts",
    "paired_diff_ci",
    "parse_caption",
    "plan_videos",
    "score_columns",
    "score_values",
    "score_video",
    "score_videos",
    "sidecar_path",
    "summarize_adherence",
    "summarize_scores",
    "t975",
    "video_provenance",
    "write_video_with_sidecar",
]
