"""Train the embedded tiny Wan teacher on qvgen.data's procedural world (`qvgen train-teacher`).

`train_teacher(cfg)` runs four main phases, each in its own module:

1. `vae_training.train_vae`: the 4× `AutoencoderKLWan` learns to reconstruct procedural clips (before it,
   with `text_steps`, `text_training.train_text_encoder` teaches the random UMT5 which clause says what);
2. `world.write_world_shards`: the frozen VAE and UMT5 encoder turn `num_clips` clips
   and captions into qvgen.data latent shards, rendered in memory (lossless, deterministic);
3. `transformer_training.train_transformer`: Wan flow matching with caption dropout and an EMA;
4. `evaluation.evaluate_teacher`: prompt adherence (qvgen.eval) of the teacher's samples of held-out
   captions, and of the ground-truth clips and their VAE reconstructions as references.

The result is a diffusers folder (model_index.json, transformer/, vae/, text_encoder/, tokenizer/,
scheduler/) plus ``training_report.json`` and ``MODEL_CARD.md``, written atomically. Every phase is
seeded; a run with fixed step counts (no `minutes` cap) is bitwise reproducible at one torch thread.
With a `work_dir`, the trained VAE and the shards are kept there and reused by a rerun of the same config.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from qvgen.core import atomic_dir, atomic_write_text, files_sha256
from qvgen.data import read_manifest
from qvgen.demo.evaluation import evaluate_teacher, sample_teacher
from qvgen.demo.model_card import model_card, retrain_command
from qvgen.demo.teacher_config import (
    CARD_NAME,
    DECODER_FIELDS,
    DEFAULT_TEACHER_DIR,
    EVAL_FIELDS,
    FINETUNE_FIELDS,
    REPORT_NAME,
    SHARD_FIELDS,
    TRANSFORMER_FIELDS,
    VAE_FIELDS,
    VAE_FINETUNE_FIELDS,
    TeacherConfig,
    digest,
    report_config,
)
from qvgen.demo.text_training import train_text_encoder
from qvgen.demo.transformer_training import train_transformer
from qvgen.demo.vae_training import (
    build_teacher_components,
    clip_shape,
    finetune_decoder,
    finetune_vae,
    train_vae,
)
from qvgen.demo.world import balanced_captions, write_world_shards
from qvgen.models import Components, get_family

SHARD_LOG = "teacher_shards_log.json"
"""Written into a finished shard folder: how long the encoding took."""

__all__ = [
    "CARD_NAME",
    "DEFAULT_TEACHER_DIR",
    "EVAL_FIELDS",
    "REPORT_NAME",
    "TeacherConfig",
    "balanced_captions",
    "model_card",
    "reevaluate_teacher",
    "retrain_command",
    "sample_teacher",
    "train_teacher",
]


@contextlib.contextmanager
def deterministic_cpu() -> Iterator[None]:
    """One intra-op thread and deterministic kernels for the duration of the run."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(threads)


def _deadline(minutes: float | None, share: float) -> Callable[[], bool]:
    """A stop test that turns true after `share` of `minutes` (never, when `minutes` is None)."""
    if minutes is None:
        return lambda: False
    end = time.monotonic() + 60.0 * minutes * share
    return lambda: time.monotonic() > end


def _cached_vae(vae_class: Any, folder: Path) -> tuple[Any, dict[str, Any]] | None:
    if not (folder / "vae_log.json").is_file():
        return None
    log = {**json.loads((folder / "vae_log.json").read_text()), "reused_from": str(folder)}
    return vae_class.from_pretrained(folder).eval(), log


def _save_vae(vae: Any, log: dict[str, Any], folder: Path) -> None:
    """The VAE and its log into `folder`, atomically (the log marks the phase as finished)."""

    def write(tmp: Path) -> None:
        vae.save_pretrained(tmp)
        (tmp / "vae_log.json").write_text(json.dumps(log))

    atomic_dir(folder, write)


VAE_PROVENANCE = ("source_config", "source_retrain_command", "source_seconds")
"""What a borrowed VAE's log keeps of the run that trained it (a chain of borrowings keeps the first run)."""


def _borrowed_vae(vae_class: Any, cfg: TeacherConfig) -> tuple[Any, dict[str, Any]]:
    """The VAE of teacher folder `cfg.vae_from`, and a log naming it and the command that trained it."""
    assert cfg.vae_from is not None
    folder = Path(cfg.vae_from) / "vae"
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: vae_from names no teacher folder with a vae/ (config.json)")
    vae = vae_class.from_pretrained(folder).eval()
    if vae.config.z_dim != cfg.vae_z_dim:
        raise ValueError(
            f"{folder / 'config.json'}: z_dim {vae.config.z_dim} differs from the config's vae_z_dim {cfg.vae_z_dim}"
        )
    log: dict[str, Any] = {
        "from": str(cfg.vae_from),
        "sha256": files_sha256([folder], folder, "*.safetensors"),  # weights: config.json names its path
        "steps": 0,
        "seconds": 0.0,
    }
    report = Path(cfg.vae_from) / REPORT_NAME
    if report.is_file():
        source = json.loads(report.read_text())
        source_vae = source.get("vae") or {}
        if "from" in source_vae:  # that teacher borrowed it too: credit the run that trained it
            log.update({k: source_vae[k] for k in VAE_PROVENANCE if k in source_vae})
        else:
            ph = source.get("phase_seconds") or {}
            log["source_config"] = source["config"]
            log["source_retrain_command"] = retrain_command(source["config"])
            log["source_seconds"] = round(float(ph.get("vae") or 0.0) + float(ph.get("decoder") or 0.0), 1)
    return vae, log


def _identity(cfg: TeacherConfig, fields: tuple[str, ...], components: Components) -> str:
    """A phase's folder name in `work_dir`: the digest of its fields, or with a borrowed VAE the digest
    of its fields but `vae_from` plus the VAE's own hash (the same VAE under another path is the same
    phase; another VAE under the same path is not)."""
    if cfg.vae_from is None:
        return digest(cfg, fields)
    fields = tuple(f for f in fields if f != "vae_from")
    vae: Any = components.vae
    config = {k: v for k, v in vae.config.items() if not k.startswith("_")}  # not its path or version
    vae_hash = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for tensor in vae.state_dict().values():
        vae_hash.update(tensor.numpy().tobytes())
    return f"{digest(cfg, fields)}-{vae_hash.hexdigest()[:8]}"


def _vae_phase(components: Components, cfg: TeacherConfig, work: Path, progress: bool) -> tuple[Any, dict]:
    """Train (and fine-tune) the VAE, reusing what a run of the same VAE config left in `work`; or take
    `cfg.vae_from`'s."""
    vae_class: Any = type(components.vae)
    if cfg.vae_from is not None:
        return _borrowed_vae(vae_class, cfg)
    final_dir = work / f"vae-{digest(cfg, VAE_FINETUNE_FIELDS)}"
    cached = _cached_vae(vae_class, final_dir) if cfg.vae_finetune_steps else None
    if cached is not None:
        return cached
    base_dir = work / f"vae-{digest(cfg, VAE_FIELDS)}"
    cached = _cached_vae(vae_class, base_dir)
    if cached is None:
        log = train_vae(components.vae, cfg, _deadline(cfg.minutes, 0.30), progress)
        _save_vae(components.vae, log, base_dir)
        vae = components.vae
    else:
        vae, log = cached
    if not cfg.vae_finetune_steps:
        return vae, log
    finetune = finetune_vae(vae, cfg, _deadline(cfg.minutes, 0.10), progress)
    log = {**log, "clips_finetune": finetune, "seconds": round(log["seconds"] + finetune["seconds"], 1)}
    log["steps"] = log["steps"] + finetune["steps"]
    _save_vae(vae, log, final_dir)
    return vae, log


def _transformer_phase(
    components: Components, cfg: TeacherConfig, work: Path, shard_dir: Path, progress: bool, stage: int = 1
) -> tuple[Any, dict[str, Any]]:
    """Train the transformer (stage 1 or 2), or reuse the one a run of the same settings left in `work`."""
    fields = TRANSFORMER_FIELDS if stage == 1 else FINETUNE_FIELDS
    folder = work / f"transformer-{_identity(cfg, fields, components)}"
    log_file = folder / "transformer_log.json"
    if log_file.is_file():
        log = {**json.loads(log_file.read_text()), "reused_from": str(folder)}
        model_class: Any = type(components.transformer)
        return model_class.from_pretrained(folder).eval(), log
    stop = _deadline(cfg.minutes, 0.30 if stage == 1 else 0.10)
    log = train_transformer(components, cfg, shard_dir, stop, progress, stage=stage)
    transformer: Any = components.transformer

    def write(tmp: Path) -> None:
        transformer.save_pretrained(tmp)
        (tmp / "transformer_log.json").write_text(json.dumps(log))

    atomic_dir(folder, write)
    return transformer, log


def _decoder_phase(
    components: Components, cfg: TeacherConfig, work: Path, progress: bool
) -> tuple[Any, dict[str, Any]]:
    """Fine-tune the VAE decoder (its latents unchanged), or reuse the one a run left in `work`."""
    if not cfg.vae_decoder_steps or cfg.vae_from is not None:
        return components.vae, {"steps": 0}
    folder = work / f"vae-{digest(cfg, DECODER_FIELDS)}"
    cached = _cached_vae(type(components.vae), folder)
    if cached is not None:
        return cached
    vae: Any = components.vae
    log = finetune_decoder(vae, cfg, _deadline(cfg.minutes, 0.05), progress)
    _save_vae(vae, log, folder)
    return vae, log


def train_teacher(cfg: TeacherConfig, progress: bool = True) -> Path:
    """Run the four phases and write the teacher folder with its report and model card; return it."""
    import qvgen.eval  # noqa: F401  (the quality check's scorer, loaded before hours of training)

    check_output_folder(cfg.out)
    started = time.monotonic()
    with deterministic_cpu(), contextlib.ExitStack() as stack:
        if cfg.work_dir is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="qvgen-teacher-")))
        else:
            work = cfg.work_dir
            work.mkdir(parents=True, exist_ok=True)
        components = build_teacher_components(
            cfg.seed,
            cfg.patch_size,
            cfg.num_layers,
            cfg.ffn_dim,
            cfg.vae_z_dim,
            cfg.text_length,
            cfg.num_heads,
        )
        timings: dict[str, float] = {}
        t = time.monotonic()
        # cheap (about a minute) and deterministic: retrained rather than cached in work_dir
        text_log = train_text_encoder(components, cfg, progress=progress) if cfg.text_steps else {"steps": 0}
        components.text_encoder.requires_grad_(False)
        timings["text_s"] = time.monotonic() - t

        t = time.monotonic()
        vae, vae_log = _vae_phase(components, cfg, work, progress)
        components = dataclasses.replace(components, vae=vae)
        components.vae.requires_grad_(False)
        timings["vae_s"] = time.monotonic() - t

        t = time.monotonic()
        shard_dir = work / f"shards-{_identity(cfg, SHARD_FIELDS, components)}"
        shard_log = shard_dir / SHARD_LOG
        if (shard_dir / "manifest.json").is_file():
            encoder_name = read_manifest(shard_dir).encoder
        else:
            if shard_dir.exists():
                shutil.rmtree(shard_dir)
            encoder_name = write_world_shards(
                components, cfg.world_seed, cfg.num_clips, clip_shape(cfg), shard_dir,
                max_objects=cfg.max_objects, progress=progress,
            )  # fmt: skip
            shard_log.write_text(json.dumps({"seconds": round(time.monotonic() - t, 1)}))
        timings["shards_s"] = time.monotonic() - t
        phase_s = {
            "text": text_log.get("seconds", 0.0),
            "vae": vae_log["seconds"],
            "shards": json.loads(shard_log.read_text())["seconds"] if shard_log.is_file() else None,
        }

        t = time.monotonic()
        transformer, transformer_log = _transformer_phase(components, cfg, work, shard_dir, progress)
        components = dataclasses.replace(components, transformer=transformer)
        if cfg.finetune_steps:
            transformer, stage2 = _transformer_phase(components, cfg, work, shard_dir, progress, stage=2)
            components = dataclasses.replace(components, transformer=transformer)
            transformer_log = {**transformer_log, "stage2": stage2,
                               "seconds": transformer_log["seconds"] + stage2["seconds"]}  # fmt: skip
        timings["transformer_s"] = time.monotonic() - t

        t = time.monotonic()
        vae, decoder_log = _decoder_phase(components, cfg, work, progress)
        components = dataclasses.replace(components, vae=vae)
        vae_log = {**vae_log, "decoder": decoder_log}
        timings["decoder_s"] = time.monotonic() - t
        _save(components, {"config": json.loads(cfg.model_dump_json())}, work / "weights-unevaluated")

        t = time.monotonic()
        quality = evaluate_teacher(components, cfg)
        timings["eval_s"] = time.monotonic() - t
        timings["total_s"] = time.monotonic() - started
        phase_s.update(
            transformer=transformer_log["seconds"], decoder=decoder_log.get("seconds", 0.0),
            eval=round(timings["eval_s"], 1),
        )  # fmt: skip

        report = {
            "config": json.loads(cfg.model_dump_json()),
            "encoder": encoder_name,
            "text_encoder": text_log,
            "vae": vae_log,
            "transformer": transformer_log,
            "quality": quality,
            "timings_s": {k: round(v, 1) for k, v in timings.items()},
            "phase_seconds": phase_s,
            "versions": {"torch": torch.__version__, "threads": 1},
        }
        return _save(components, report, cfg.out)


def reevaluate_teacher(folder: Path, **changes: Any) -> Path:
    """Re-run the quality check of a trained teacher folder with new evaluation settings.

    Only `EVAL_FIELDS` may change; the folder's report (config, quality, eval time) and card are rewritten.
    """
    bad = sorted(set(changes) - EVAL_FIELDS)
    if bad:
        raise ValueError(
            f"reevaluate_teacher can only change {sorted(EVAL_FIELDS)}; got {bad} (retrain instead)"
        )
    report_path = folder / REPORT_NAME
    try:
        report = json.loads(report_path.read_text())
    except (OSError, ValueError) as e:
        raise FileNotFoundError(f"{report_path}: no readable teacher training report: {e}") from e
    cfg = TeacherConfig.model_validate({**report_config(report["config"]), **changes})
    started = time.monotonic()
    with deterministic_cpu():
        quality = evaluate_teacher(get_family("wan").load(folder), cfg)
    report["config"] = json.loads(cfg.model_dump_json())
    report["quality"] = quality
    report["timings_s"]["eval_s"] = round(time.monotonic() - started, 1)
    report["evaluated_separately"] = True
    for name, text in ((REPORT_NAME, json.dumps(report, indent=1) + "\n"), (CARD_NAME, model_card(report))):
        atomic_write_text(folder / name, text)
    return folder


def check_output_folder(out: Path) -> None:
    """Refuse an `--out` that holds anything but an earlier teacher: saving replaces the whole folder."""
    out = out.expanduser()
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: --out is a file; choose a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / REPORT_NAME).is_file():
        raise FileExistsError(
            f"{out}: not empty and not a teacher folder (no {REPORT_NAME}); saving the teacher replaces "
            "the whole folder, so choose an empty or new --out"
        )


def _save(components: Components, report: dict[str, Any], out: Path) -> Path:
    """Write the diffusers folder, the report and the card into a temp folder, then swap it in."""
    out = out.expanduser().resolve()

    def write(tmp: Path) -> None:
        get_family("wan").pipeline(components).save_pretrained(tmp)
        (tmp / REPORT_NAME).write_text(json.dumps(report, indent=1) + "\n")
        if "quality" in report:
            (tmp / CARD_NAME).write_text(model_card(report))

    return atomic_dir(out, write)
