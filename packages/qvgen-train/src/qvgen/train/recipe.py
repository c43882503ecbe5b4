"""The QVGen recipe, top to bottom: `run(cfg)` distils a W4A4 student from its full-precision teacher.

No Trainer class and no callbacks: every feature is a visible line below (house style §6).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, DistributedType
from accelerate.logging import get_logger
from accelerate.utils import DistributedDataParallelKwargs, set_seed
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from qvgen import auxiliary, quant
from qvgen.core import (
    Interrupted,
    append_jsonl,
    expand_model_paths,
    interrupt_signal,
    write_errors_named,
)
from qvgen.data import LatentBatch, make_loader
from qvgen.models import (
    EXPERTS,
    STUDENT_MANIFEST,
    ExpertName,
    ExpertsManifest,
    boundary_ratio_of,
    expert_timestep_mask,
    get_family,
    has_transformer_2,
    write_experts_folder,
)
from qvgen.train import checkpoint as ckpt
from qvgen.train import methods, sharding
from qvgen.train.config import RunConfig
from qvgen.train.export import export_student, transformer_checkpoint
from qvgen.train.loss import distill_loss
from qvgen.train.method_config import EfficientDMMethod, QDMMethod, SVDQuantMethod
from qvgen.train.optim import build_optimizer, build_scheduler
from qvgen.train.prompts import empty_prompt
from qvgen.train.run_folder import claim_run_folder, trim_metrics
from qvgen.train.validation import ValidationSampler

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class RunResult:
    """What a run produced. `losses`: this process's loss at each logged step; `model`: the final student
    (converted to deploy layers in place on the main process when `export.deploy` is set)."""

    model: nn.Module
    output_dir: Path
    fake_quant_dir: Path | None
    deploy_dir: Path | None
    steps: int
    losses: tuple[float, ...]
    phi_rank: int | None


def _vae_config(checkpoint: Path) -> dict[str, Any] | None:
    path = checkpoint / "vae" / "config.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _batches(loader: Any, skip: int) -> Iterator[LatentBatch]:
    """The loader's stream from batch `skip` on (the data position of a resumed run)."""
    it = iter(loader)
    for _ in range(skip):
        next(it)
    yield from it


def _resume_point(cfg: RunConfig, accelerator: Accelerator) -> tuple[Path, ckpt.TrainState] | None:
    where = cfg.checkpoint.resume_from
    if where is None:
        earlier = ckpt.complete_checkpoints(cfg.output_dir / "checkpoints")
        if earlier:  # a fresh run would prune them, and a later `latest` would pick them up
            raise ValueError(
                f"{earlier[-1].parent}: holds checkpoints of an earlier run (up to {earlier[-1].name}); resume it "
                "with checkpoint.resume_from=latest, or choose another output_dir"
            )
        return None
    path = ckpt.latest_checkpoint(cfg.output_dir / "checkpoints") if where == "latest" else Path(where)
    if path is None:
        return None
    state = ckpt.verify_checkpoint(path)
    ckpt.check_compatible(path, state, cfg.model_dump(mode="json"), accelerator.num_processes)
    if state.config.get("expert") != cfg.expert:
        raise ckpt.CheckpointError(
            f"{path}: checkpoint of expert {state.config.get('expert')!r}, but this run trains {cfg.expert!r}; "
            "resume with the same expert, or start a new output_dir"
        )
    return path, state


_FLUSH_EVERY = 50
"""Logged steps whose losses are read from the device together."""


class _PendingLog:
    """Logged steps whose loss is still a device tensor; `flush` reads them in one transfer."""

    def __init__(self) -> None:
        self._steps: list[tuple[int, float, int | None]] = []
        self._losses: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self._steps)

    def add(self, step: int, loss: torch.Tensor, lr: float, phi_rank: int | None) -> None:
        self._steps.append((step, lr, phi_rank))
        self._losses.append(loss.detach().float())

    def flush(self) -> list[dict[str, Any]]:
        if not self._steps:
            return []
        values = torch.stack(self._losses).tolist()
        records = [
            {"step": step, "loss": value, "lr": lr, "phi_rank": rank}
            for (step, lr, rank), value in zip(self._steps, values, strict=True)
        ]
        self._steps, self._losses = [], []
        return records


def _lr_group(optimizer: Any) -> int:
    """Index of the group whose lr the log reports: the latent weights, else the first trained group."""
    groups = optimizer.param_groups
    names = [g.get("name") for g in groups]
    return names.index("weights") if "weights" in names else 0


def _enable_gradient_checkpointing(model: nn.Module) -> None:
    """diffusers' block-level switch (`ModelMixin.enable_gradient_checkpointing`)."""
    enable = getattr(model, "enable_gradient_checkpointing", None)
    if not callable(enable):
        raise ValueError(
            f"train.gradient_checkpointing: {type(model).__name__} has no enable_gradient_checkpointing(); "
            "set train.gradient_checkpointing=false"
        )
    enable()


def run(cfg: RunConfig, *, overwrite: bool = False, resume_command: str | None = None) -> RunResult:
    """Quantize, (optionally) train with Φ + rank decay, export. Collective under `accelerate launch`.

    `output_dir` is claimed first (`qvgen.train.run_folder`): a folder holding another config's run or a
    finished run is refused unless `overwrite` replaces it. Ctrl-C / SIGTERM in the loop raise
    `qvgen.core.Interrupted` naming the last checkpoint and `resume_command` (how the user resumes).
    """
    cfg = expand_model_paths(cfg)  # `~`/`$VAR` in every path, as `load_config` does: one folder, not two
    if cfg.expert == "both":
        return _run_both_experts(cfg, overwrite=overwrite, resume_command=resume_command)
    if cfg.logging.tensorboard and not any(
        importlib.util.find_spec(m) for m in ("tensorboard", "tensorboardX")
    ):
        raise ValueError(
            "logging.tensorboard is true but the `tensorboard` package is not installed; "
            "`pip install tensorboard` or set logging.tensorboard=false (metrics.jsonl is always written)"
        )
    accelerator = Accelerator(
        mixed_precision=cfg.train.mixed_precision,
        cpu=not torch.cuda.is_available(),  # CPU-only: several processes become gloo DDP (MULTI_CPU)
        step_scheduler_with_optimizer=False,  # one schedule step per optimizer step, whatever the world size
        log_with="tensorboard" if cfg.logging.tensorboard else None,
        project_dir=str(cfg.output_dir),
        # DDP's grads as views of its buckets: no second copy of every gradient (4 bytes a parameter)
        kwargs_handlers=[DistributedDataParallelKwargs(gradient_as_bucket_view=True)],
    )
    if accelerator.is_main_process:
        claim_run_folder(cfg, overwrite=overwrite)  # before anything is written into output_dir
    accelerator.wait_for_everyone()
    # Python, NumPy and torch's global RNGs from the run seed, per rank (seed + rank): nothing draws from
    # them today, but whatever does later stays reproducible (the sampling generator below is separate)
    set_seed(cfg.train.seed, device_specific=True)
    family = get_family(cfg.model.family)
    if cfg.model.checkpoint is None:
        raise ValueError("model.checkpoint: set the local diffusers folder of the model to quantize")
    device, rank = accelerator.device, accelerator.process_index
    checkpoint = transformer_checkpoint(cfg)  # model.checkpoint, or one expert's subfolder of it
    expert = _expert_range(cfg)  # (expert, boundary_ratio): timesteps on its side of the boundary only
    resume = _resume_point(cfg, accelerator)
    start = resume[1].step if resume is not None else 0

    # 1. Teacher (only when a loss term or the calibration reads it): frozen, eval, its own dtype.
    #    Student: the same checkpoint in float32 master weights, on the device before the range search
    #    and the SVDs (unless FSDP2 shards it: then the full fp32 copy would not fit beside the teacher).
    teacher_target = _uses_teacher_target(cfg)
    teacher = None
    if teacher_target or isinstance(cfg.method, SVDQuantMethod):
        teacher = family.load_transformer(checkpoint, dtype=cfg.model.dtype).to(device)
        teacher.eval().requires_grad_(False)
    fsdp = cfg.train.sharding == "fsdp2"  # Φ outside the shards: no re-wrap, gradients all-reduced
    student = family.load_transformer(checkpoint, dtype="float32").train()
    if not fsdp:
        student.to(device)

    # 2. Quantize and calibrate (fp32, before anything is wrapped), then attach Φ from SVD(W − Q(W)).
    quant.prepare_(
        student,
        cfg.quant,
        layer_roles=family.layer_roles,
        keep_high_precision=family.keep_high_precision,
        num_train_timesteps=family.num_train_timesteps,
    )
    if isinstance(cfg.method, SVDQuantMethod):  # smoothing + kept 16-bit branch; ranges are the residual's
        assert teacher is not None
        _fit_svdquant(cfg, family, teacher, student, device)
    quant.initialize_(student, progress=cfg.logging.progress_bar and accelerator.is_main_process)
    branches = None
    if cfg.aux is not None:
        branches = auxiliary.attach_(student, cfg.aux)
        if start > 0:  # Φ's shapes as the checkpoint saw them (end of step start-1)
            auxiliary.apply_(branches, auxiliary.rank_at(start - 1, cfg.aux.decay), None)
    if isinstance(cfg.method, EfficientDMMethod):  # latent W frozen, LoRA inside Qw (merged before export)
        methods.attach_lora_(student, cfg.method, cfg.train.seed)
    if cfg.train.gradient_checkpointing:
        _enable_gradient_checkpointing(student)  # block level only (docs/method.md B9)

    # 3. Optimizer groups, schedule, accelerate. The loader splits by node/worker itself (qvgen.data),
    #    so it is not handed to accelerate (which would shard it a second time).
    if accelerator.distributed_type == DistributedType.FSDP:
        raise ValueError(
            "accelerate's FSDP plugin is not used by the recipe: launch with a multi-process config "
            "(configs/accelerate/ddp.yaml) and set train.sharding=fsdp2 (the recipe shards the student)"
        )
    if fsdp:
        sharding.shard_student_(student, device)
    # a run with Φ keeps its `phi` group even once empty: checkpoints after removal then resume (issue 13)
    optimizer = build_optimizer(student, cfg.optim, keep_empty=("phi",) if cfg.aux is not None else ())
    scheduler = build_scheduler(optimizer, cfg.optim, cfg.train.max_steps)
    if fsdp:
        optimizer, scheduler = accelerator.prepare(optimizer, scheduler)
        states = {"model": student, "optimizer": optimizer, "scheduler": scheduler, "rank": rank}
        save_state: Callable[[Path], None] | None = functools.partial(sharding.save_sharded_state, **states)
        load_state: Callable[[Path], None] | None = functools.partial(sharding.load_sharded_state, **states)
    else:
        student, optimizer, scheduler = accelerator.prepare(student, optimizer, scheduler)
        save_state = load_state = None  # accelerate's save_state / load_state
    generator = torch.Generator().manual_seed(cfg.train.seed + rank)  # every rank its own draws (B3)
    generators = {"sampling": generator}
    data_batches = 0
    if resume is not None:
        ckpt.load_checkpoint(accelerator, resume[0], generators, load_state)
        data_batches = resume[1].data_batches
        log.info(f"resumed from {resume[0]} at step {start}", main_process_only=True)

    losses: list[float] = []
    if start < cfg.train.max_steps:
        assert cfg.data is not None  # RunConfig validates it
        loader = make_loader(cfg.data, rank=rank, world_size=accelerator.num_processes)
        batches = _batches(loader, data_batches)
        vae_config = _vae_config(Path(cfg.model.checkpoint))
        empty = empty_prompt(cfg, family) if cfg.train.caption_dropout > 0 else None
        metrics_path = cfg.output_dir / "metrics.jsonl"
        if accelerator.is_main_process:
            metrics_path.parent.mkdir(parents=True, exist_ok=True)
            trim_metrics(metrics_path, start)  # a resumed run logs those steps again; a torn line is cut
        pending = _PendingLog()
        lr_group = _lr_group(optimizer)
        validate = ValidationSampler(family, cfg) if cfg.logging.validation is not None else None
        if cfg.logging.tensorboard:
            accelerator.init_trackers("qvgen")
        bar = tqdm(
            range(start, cfg.train.max_steps), initial=start, total=cfg.train.max_steps,
            disable=not (cfg.logging.progress_bar and accelerator.is_local_main_process), desc="train",
        )  # fmt: skip
        phi_rank = None
        completed = start  # optimizer steps done, for the interrupt message
        try:
            for step in bar:
                # 4. Rank decay: γ for this step; re-SVD + shrink, or removal, on boundary steps.
                if branches is not None:
                    assert cfg.aux is not None
                    state = auxiliary.rank_at(step, cfg.aux.decay)
                    changed = auxiliary.apply_(branches, state, optimizer.optimizer)
                    phi_rank = state.rank
                    if changed and isinstance(student, DistributedDataParallel):  # a 1-process CPU run too
                        student, optimizer, scheduler = _rewrap(accelerator, student, optimizer, scheduler)

                # 5. One batch: posterior sample, normalise, per-family timesteps and noise (this rank's RNG).
                batch = next(batches)
                data_batches += 1
                latents = family.normalize_latents(batch.sample_latents(generator), vae_config)
                noise = torch.randn(latents.shape, generator=generator)
                timesteps = _sample_timesteps(family, latents.shape[0], generator, cfg, expert)
                x = family.noised_inputs(
                    latents.to(device), noise.to(device), timesteps.to(device), cfg.model
                )
                text, lengths = batch.text_embeddings.to(device).float(), batch.text_lengths.to(device)
                if empty is not None and bool(
                    torch.rand((), generator=generator) < cfg.train.caption_dropout
                ):
                    text = empty[0].to(device).expand_as(text)  # whole batch, teacher sees the same (§7.2)
                    lengths = empty[1].to(device).expand_as(lengths)

                # 6. Target: the frozen teacher on the same noisy input (or the data target), then MSE in fp32.
                if teacher_target:
                    assert teacher is not None
                    with torch.no_grad():
                        # the model's dtype, not its first parameter's: diffusers keeps some modules in
                        # fp32 (Wan's scale_shift_table comes first), so a bf16 Wan teacher got fp32 inputs
                        tdtype = getattr(teacher, "dtype", None) or next(teacher.parameters()).dtype
                        xt = dataclasses.replace(x, hidden_states=x.hidden_states.to(tdtype))
                        target = family.predict(teacher, xt, text.to(tdtype), lengths)
                else:
                    target = x.target
                with accelerator.autocast():
                    pred = family.predict(student, x, text, lengths)
                if isinstance(cfg.method, QDMMethod):  # data target + mimicking the teacher's estimate (NeM)
                    loss = methods.qdm_loss(pred, x.target, target, cfg.method)
                else:
                    loss = distill_loss(pred, target)
                accelerator.backward(loss)
                if fsdp and branches:
                    auxiliary.all_reduce_grads_(branches)  # Φ is replicated outside FSDP (ignored modules)
                if cfg.train.grad_clip is not None and fsdp:
                    sharding.clip_grad_norm_(student.parameters(), cfg.train.grad_clip)
                elif cfg.train.grad_clip is not None:
                    accelerator.clip_grad_norm_(student.parameters(), cfg.train.grad_clip)
                lr = scheduler.get_last_lr()[lr_group]  # the latent-weight group's lr used by this step
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                completed = step + 1

                # 7. Log, checkpoint, validate (outside the step's hot path). The loss stays on the device
                #    until a flush reads every pending value at once (one host sync per flush, not per step).
                done = step + 1
                if done % cfg.logging.every_n_steps == 0 or done == cfg.train.max_steps:
                    pending.add(done, loss, lr, phi_rank)
                every = cfg.checkpoint.every_n_steps
                checkpointing = every is not None and done % every == 0 and done < cfg.train.max_steps
                if checkpointing or len(pending) >= _FLUSH_EVERY or done == cfg.train.max_steps:
                    records = pending.flush()
                    losses += [r["loss"] for r in records]
                    if records:
                        last = records[-1]
                        bar.set_postfix(
                            loss=f"{last['loss']:.4g}", lr=f"{last['lr']:.3g}", rank=last["phi_rank"]
                        )
                    if accelerator.is_main_process and records:
                        # whole lines, fsynced: a kill tears the last one at most (trim_metrics cuts it)
                        with write_errors_named(metrics_path):
                            for r in records:
                                append_jsonl(metrics_path, r)
                    if cfg.logging.tensorboard:
                        for r in records:
                            accelerator.log(
                                {"loss": r["loss"], "lr": r["lr"], "phi_rank": r["phi_rank"] or 0},
                                step=r["step"],
                            )
                if checkpointing:
                    ckpt.save_checkpoint(
                        accelerator,
                        cfg.output_dir / "checkpoints",
                        ckpt.TrainState(
                            step=done, world_size=accelerator.num_processes, data_batches=data_batches,
                            phi_rank=phi_rank, config=cfg.model_dump(mode="json"),
                        ),
                        generators,
                        cfg.checkpoint.keep_last,
                        save_state,
                    )  # fmt: skip
                val = cfg.logging.validation
                due = val is not None and done % val.every_n_steps == 0
                if validate is not None and due and accelerator.is_main_process:
                    validate(accelerator.unwrap_model(student), done)
        except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (cli_main raises it as a KeyboardInterrupt)
            bar.close()
            raise Interrupted(
                _interrupt_message(cfg, completed, resume_command), interrupt_signal(e)
            ) from None
        bar.close()
        for tracker in accelerator.trackers:  # not end_training(): it also destroys the process group
            tracker.finish()

    # 8. Export: Φ must be gone; the fake-quant student (manifest + safetensors) and the real low-bit one.
    final = accelerator.unwrap_model(student)
    if fsdp:  # gather the shards (collective), rebuild the plain student on the main process
        full = sharding.gather_full_state(student)
        if accelerator.is_main_process:
            final = family.load_transformer(checkpoint, dtype="float32")
            quant.prepare_(
                final,
                cfg.quant,
                layer_roles=family.layer_roles,
                keep_high_precision=family.keep_high_precision,
                num_train_timesteps=family.num_train_timesteps,
            )
            final.load_state_dict(full, strict=True)
    if isinstance(cfg.method, EfficientDMMethod):
        methods.merge_lora_(final)  # W ← W + B·A·α/r: the exported student is a plain quantized model
    remaining = auxiliary.lowrank_parameters(final)
    if remaining:
        raise RuntimeError(
            f"Φ still has {len(remaining)} parameters after {cfg.train.max_steps} steps; "
            "the config validator should have caught this (aux.decay vs train.max_steps)"
        )
    fake_dir = deploy_dir = None
    if accelerator.is_main_process:
        fake_dir, deploy_dir = export_student(final, cfg)
    accelerator.wait_for_everyone()
    phi = None if cfg.aux is None else auxiliary.rank_at(max(0, cfg.train.max_steps - 1), cfg.aux.decay).rank
    return RunResult(final, cfg.output_dir, fake_dir, deploy_dir, cfg.train.max_steps, tuple(losses), phi)


def _interrupt_message(cfg: RunConfig, completed: int, resume_command: str | None) -> str:
    """One line for an interrupted run: where it stopped, its last checkpoint, and how to resume."""
    latest = ckpt.latest_checkpoint(cfg.output_dir / "checkpoints")
    where = (
        f"the last checkpoint is {latest}"
        if latest is not None
        else "no checkpoint yet (it starts again at step 0)"
    )
    again = resume_command or "qvgen-train run CONFIG --set checkpoint.resume_from=latest"
    return f"interrupted at step {completed}; {where}; resume with: {again}"


def _uses_teacher_target(cfg: RunConfig) -> bool:
    """Whether a training step reads the teacher's prediction (Q-DM reads it only for its mimicking term)."""
    if isinstance(cfg.method, QDMMethod):
        return cfg.method.mimic_weight > 0
    return cfg.train.loss_target == "teacher"


def _fit_svdquant(cfg: RunConfig, family: Any, teacher: nn.Module, student: nn.Module, device: Any) -> None:
    """Per-channel input maxima from the teacher on `calibration_batches` batches, then fit every branch."""
    assert isinstance(cfg.method, SVDQuantMethod)
    assert cfg.data is not None and cfg.model.checkpoint is not None
    batches = iter(make_loader(cfg.data, rank=0, world_size=1))  # every process: the same batches, same λ
    vae_config = _vae_config(Path(cfg.model.checkpoint))
    generator = torch.Generator().manual_seed(cfg.train.seed)
    tdtype = getattr(teacher, "dtype", None) or next(teacher.parameters()).dtype  # see the training step

    def run_batch() -> None:
        batch = next(batches)
        latents = family.normalize_latents(batch.sample_latents(generator), vae_config)
        noise = torch.randn(latents.shape, generator=generator)
        timesteps = _sample_timesteps(family, latents.shape[0], generator, cfg, _expert_range(cfg))
        x = family.noised_inputs(latents.to(device), noise.to(device), timesteps.to(device), cfg.model)
        x = dataclasses.replace(x, hidden_states=x.hidden_states.to(tdtype))
        text = batch.text_embeddings.to(device).to(tdtype)
        family.predict(teacher, x, text, batch.text_lengths.to(device))

    names = list(quant.quantized_layers(student))
    absmax = methods.input_absmax(teacher, names, run_batch, cfg.method.calibration_batches)
    methods.fit_kept_branches_(student, absmax, cfg.method.smooth_alpha)


def _rewrap(
    accelerator: Accelerator, model: nn.Module, optimizer: Any, scheduler: Any
) -> tuple[Any, Any, Any]:
    """Re-prepare after Φ changed shape: DDP's reducer is bound to the parameters it was built with."""
    inner = accelerator.unwrap_model(model)
    opt, sched = optimizer.optimizer, scheduler.scheduler
    accelerator.free_memory()
    return accelerator.prepare(inner, opt, sched)


# --- two experts (Wan 2.2 A14B) ----------------------------------------------------------------------------


def _expert_range(cfg: RunConfig) -> tuple[ExpertName, float] | None:
    """(expert, boundary_ratio) of a one-expert run, read from the checkpoint's model_index.json; None else."""
    if cfg.expert is None or cfg.expert == "both":
        return None
    assert cfg.model.checkpoint is not None
    root = Path(cfg.model.checkpoint)
    ratio = boundary_ratio_of(root)
    if ratio is None or not has_transformer_2(root):
        raise ValueError(
            f"expert={cfg.expert!r}: {root / 'model_index.json'} has no transformer_2/boundary_ratio; "
            "set expert=null for a one-transformer model, or pass a two-expert Wan 2.2 A14B folder"
        )
    return cfg.expert, ratio


_MAX_DRAWS = 10_000
"""Draws of the family's timestep sampler before an expert's range is declared unreachable."""


def _sample_timesteps(
    family: Any,
    batch_size: int,
    generator: torch.Generator,
    cfg: RunConfig,
    expert: tuple[ExpertName, float] | None,
) -> torch.Tensor:
    """The family's training timesteps; for one expert, only those `WanPipeline` gives that expert: the
    family's own draws, kept when inside the expert's side of the boundary (its distribution restricted)."""
    if expert is None:
        return family.sample_timesteps(batch_size, generator, cfg.model)
    name, ratio = expert
    kept: list[torch.Tensor] = []
    count = 0
    for _ in range(_MAX_DRAWS):
        t = family.sample_timesteps(batch_size, generator, cfg.model)
        t = t[expert_timestep_mask(t, name, ratio, family.num_train_timesteps)]
        kept.append(t)
        count += t.numel()
        if count >= batch_size:
            return torch.cat(kept)[:batch_size]
    raise ValueError(
        f"expert={name!r}: no training timestep on its side of boundary_ratio={ratio} in {_MAX_DRAWS} draws "
        "(model.train_flow_shift moves them); check the checkpoint's boundary_ratio"
    )


def _finished(cfg: RunConfig) -> bool:
    """Whether a one-expert run's exports are all in place (each is written atomically)."""
    final = cfg.output_dir / "final"
    wanted = [final / "fake_quant" / STUDENT_MANIFEST] if cfg.export.fake_quant else []
    wanted += [final / "deploy" / "quant_manifest.json"] if cfg.export.deploy else []
    return bool(wanted) and all(p.is_file() for p in wanted)


def _run_both_experts(cfg: RunConfig, *, overwrite: bool, resume_command: str | None) -> RunResult:
    """`transformer`, then `transformer_2`: each a complete one-expert run in `output_dir/<expert>/`; an
    expert whose exports are already there is not trained again (resume picks up the other). Then the
    two-expert `final/fake_quant` and `final/deploy` folders (`qvgen.models.write_experts_folder`).
    The result's `model` is an `nn.ModuleDict` of the experts trained by this call."""
    assert cfg.model.checkpoint is not None
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    if accelerator.is_main_process:
        claim_run_folder(cfg, overwrite=overwrite)
    accelerator.wait_for_everyone()
    trained: dict[str, RunResult] = {}
    subs = {e: cfg.model_copy(update={"expert": e, "output_dir": cfg.output_dir / e}) for e in EXPERTS}
    for name, sub in subs.items():
        _expert_range(sub)  # a one-transformer checkpoint is refused before anything trains
        if _finished(sub):
            log.info(
                f"expert {name}: exported in {sub.output_dir / 'final'}, not trained again",
                main_process_only=True,
            )
            continue
        trained[name] = run(sub, resume_command=resume_command)
    ratio = boundary_ratio_of(Path(cfg.model.checkpoint))
    assert ratio is not None  # _expert_range checked it
    fake_dir = deploy_dir = None
    final = cfg.output_dir / "final"
    if accelerator.is_main_process:
        for content, wanted in (("fake_quant", cfg.export.fake_quant), ("deploy", cfg.export.deploy)):
            if not wanted:
                continue
            manifest = ExpertsManifest(content=content, boundary_ratio=ratio)  # type: ignore[arg-type]
            parts = {e: sub.output_dir / "final" / content for e, sub in subs.items()}
            write_experts_folder(final / content, parts, manifest)
        fake_dir = final / "fake_quant" if cfg.export.fake_quant else None
        deploy_dir = final / "deploy" if cfg.export.deploy else None
    accelerator.wait_for_everyone()
    losses = tuple(loss for r in trained.values() for loss in r.losses)
    phi = None if cfg.aux is None else auxiliary.rank_at(max(0, cfg.train.max_steps - 1), cfg.aux.decay).rank
    model = nn.ModuleDict({name: r.model for name, r in trained.items()})
    return RunResult(model, cfg.output_dir, fake_dir, deploy_dir, cfg.train.max_steps, losses, phi)
