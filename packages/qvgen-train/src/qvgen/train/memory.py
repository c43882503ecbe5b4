"""Bytes per GPU of a QVGen run's model states, DDP vs FSDP2, from the real transformer configs.

`python -m qvgen.train.memory` prints the plan for Wan 2.1 1.3B and 14B on 8 GPUs (the train README's
table). Counted per process: the student's fp32 master weights, gradients and AdamW moments (16 B per
trainable parameter, weight quantizer and clip parameters included), Φ at its initial rank (fp32, also
16 B per parameter, replicated under both: FSDP2 keeps it outside the shards), the frozen teacher in its
dtype (replicated, never sharded), and under FSDP2 the largest block gathered for its forward/backward
(fp32 weights + gradients). Not counted: activations (they depend on resolution, frames, batch and
checkpointing), the CUDA context, allocator fragmentation and the VAE/text encoder (not loaded by
training: latents are precomputed). DDP's gradient buckets add nothing: the recipe sets
`gradient_as_bucket_view`, so the gradients counted above are the buckets. The teacher is always counted,
though a run whose loss reads no teacher (`loss_target: data`) does not load it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

from qvgen import quant
from qvgen.models import build_real_on_meta, get_family, get_real_model

GIB = 1024**3
GPU_BYTES = 80 * 10**9
"""An "80 GB" H100/A100: 80e9 bytes (74.5 GiB)."""
ADAMW_FP32 = 16
"""fp32 weight + fp32 gradient + two fp32 AdamW moments."""
TEACHER_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True, slots=True)
class MemoryPlan:
    """Bytes per GPU for one model, sharding and world size (model states only, see the module doc)."""

    model: str
    sharding: Literal["ddp", "fsdp2"]
    world_size: int
    student_params: int
    phi_params: int
    student_bytes: int
    phi_bytes: int
    teacher_bytes: int
    gathered_block_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.student_bytes + self.phi_bytes + self.teacher_bytes + self.gathered_block_bytes


def _quantizer_params(model: nn.Module, plan: dict[str, quant.LayerRole], groups: int) -> tuple[int, int]:
    """(weight scale + zero point + clip logit params, in+out summed) over the layers `prepare_` would swap."""
    extra = io = 0
    for name in plan:
        layer = model.get_submodule(name)
        assert isinstance(layer, nn.Linear)
        extra += 2 * layer.out_features + 2 * groups
        io += layer.in_features + layer.out_features
    return extra, io


def _teacher_bytes(model: nn.Module, dtype: Literal["float32", "bfloat16", "float16"]) -> int:
    """The teacher's parameters in `dtype`, except those diffusers keeps in float32 when it loads a model in
    a 16-bit dtype (`_keep_in_fp32_modules`, matched on the dotted name's parts as diffusers does: Wan's
    time embedder, norms and modulation tables), plus its buffers (RoPE tables) at their own dtype."""
    keep = tuple(getattr(model, "_keep_in_fp32_modules", None) or ())
    total = sum(b.numel() * b.element_size() for b in model.buffers())
    for name, p in model.named_parameters():
        fp32 = any(k in name.split(".") for k in keep)
        total += p.numel() * (4 if fp32 else TEACHER_BYTES[dtype])
    return total


def memory_plan(
    model_name: str,
    *,
    world_size: int = 8,
    sharding: Literal["ddp", "fsdp2"] = "ddp",
    initial_rank: int = 32,
    teacher_dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16",
    act_groups: int = 50,
    num_layers: int | None = None,
) -> MemoryPlan:
    """The per-GPU plan for a real model (`qvgen.models.REAL_MODELS` name) built on the meta device;
    `num_layers` plans the same widths at another depth (`qvgen.models.build_real_width`)."""
    real = get_real_model(model_name)
    family = get_family(real.family)
    if num_layers is None:
        model = build_real_on_meta(model_name)
    else:
        model = family.build_transformer_on_meta({**real.transformer, "num_layers": num_layers})
    plan = quant.plan_quantization(
        model,
        quant.QuantConfig(),
        layer_roles=family.layer_roles,
        keep_high_precision=family.keep_high_precision,
    )
    params = sum(p.numel() for p in model.parameters())
    qparams, io = _quantizer_params(model, plan, act_groups)
    student = params + qparams
    phi = initial_rank * io
    blocks = [b for child in model.children() if isinstance(child, nn.ModuleList) for b in child]
    largest_block = max((sum(p.numel() for p in b.parameters()) for b in blocks), default=0)
    shard = world_size if sharding == "fsdp2" else 1
    return MemoryPlan(
        model=model_name,
        sharding=sharding,
        world_size=world_size,
        student_params=student,
        phi_params=phi,
        student_bytes=-(-student * ADAMW_FP32 // shard),
        phi_bytes=phi * ADAMW_FP32,
        teacher_bytes=_teacher_bytes(model, teacher_dtype),
        gathered_block_bytes=largest_block * 8 if sharding == "fsdp2" else 0,
    )


def table(
    models: tuple[str, ...] = ("wan2.1-t2v-1.3b", "wan2.1-t2v-14b", "wan2.2-ti2v-5b", "wan2.2-t2v-a14b"),
    world_size: int = 8,
) -> str:
    """Markdown table of `memory_plan` for each model under DDP and FSDP2. A two-expert model (Wan 2.2
    A14B) is planned for one expert: `expert: both` trains them one after the other, each with only its own
    teacher loaded."""
    rows = [
        "| model | sharding | student params | Φ params (r0 32) | student states | Φ states | teacher bf16 "
        "| gathered block | total / GPU | left of 80 GB for activations |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name in models:
        for sharding in ("ddp", "fsdp2"):
            p = memory_plan(name, world_size=world_size, sharding=sharding)  # type: ignore[arg-type]
            left = (GPU_BYTES - p.total_bytes) / GIB
            fits = f"{left:.1f} GiB" if left > 0 else f"does not fit ({-left:.0f} GiB over)"
            rows.append(
                f"| {name} | {sharding} x{world_size} | {p.student_params / 1e9:.2f} B | {p.phi_params / 1e6:.0f} M "
                f"| {p.student_bytes / GIB:.1f} GiB | {p.phi_bytes / GIB:.2f} GiB | {p.teacher_bytes / GIB:.1f} GiB "
                f"| {p.gathered_block_bytes / GIB:.2f} GiB | {p.total_bytes / GIB:.1f} GiB | {fits} |"
            )
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
