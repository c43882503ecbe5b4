"""`import_reference`: a checkpoint of the reference implementation (ModelTC/QVGen) → a qvgen student.

The reference saves its trained transformer with diffusers' `save_pretrained` after replacing every
`nn.Linear` by its `QuantLinear` (`training/quant/quant.py`), so `diffusion_pytorch_model.safetensors`
holds, per quantized layer `<n>`:

| reference key               | shape      | qvgen key                           | conversion                      |
|-----------------------------|------------|-------------------------------------|---------------------------------|
| `<n>.w`                     | [out, in]  | `<n>.weight`                        | as is (latent float weight)     |
| `<n>.b`                     | [out]      | `<n>.bias`                          | as is                           |
| `<n>.wquantizer.scale`      | [out, 1]   | `<n>.weight_quantizer.scale`        | as is (LSQ+, same formula)      |
| `<n>.wquantizer.zero_point` | [out, 1]   | `<n>.weight_quantizer.zero_point`   | as is (real-valued)             |
| `<n>.aquantizer.lower`      | [G]        | `<n>.act_quantizer.clip_logit_lo`   | logit(0.95 · σ(ℓ))              |
| `<n>.aquantizer.upper`      | [G]        | `<n>.act_quantizer.clip_logit_hi`   | logit(0.95 · σ(ℓ))              |
| `<n>.loraA.weight`, `<n>.loraB.weight` (`--qa_lora`) | [r, in], [out, r] | merged: W + scale·B·A | `lora_scale` (reference inference: 1) |

The reference clips per-token ranges twice (its `clip_ratio` 0.95 times σ(ℓ), docs/method.md B1); qvgen has one
factor, so σ(ℓ') = 0.95·σ(ℓ) reproduces the same range exactly. Every other key keeps its diffusers name
(norms, modulation tables, patch embedding, Linears the reference left unquantized).

Activation groups. The reference picks a clip group per transformer call in two different ways:
- training: `idx = int(t[0]) mod G` (first sample's timestep for the whole batch);
- sampling with `--fix`: a call counter, the k-th call (k = 1, 2, ...) uses group G − k while k ≤ G, then 0.
qvgen derives the group from each sample's own timestep, so two mappings are offered:
- `mod` (default): G groups, `group_mode: mod`, g = int(t) mod G. Exactly the reference's training-time
  grouping for any batch whose samples share one timestep (always the case when sampling); it differs from
  the reference's *sampling* counter (see below) and, for mixed-timestep training batches, from its t[0] rule.
- `counter`: reproduces the sampling counter for one schedule: 1000 groups in `bin` mode (g = ⌊t⌋), where the
  integer timestep ⌊t_s⌋ of sampling step s gets the reference group max(G − 1 − s·K, 0) (K transformer calls
  per step: 2 for Wan's separate CFG calls, 1 for CogVideoX's batched CFG) and every other timestep the `mod`
  group. It differs where the reference itself is inconsistent: for Wan the second (unconditional) call of a
  step used group G − 2 − 2s in the reference but shares the first call's group here; and it is exact only
  for the schedule it was built for (same steps, same timesteps).
For CogVideoX with 50 trailing DDIM steps, t_s = 999 − 20s and the counter group 49 − s equals ⌊t_s·50/1000⌋,
i.e. qvgen's default `bin` grouping with G = 50.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from qvgen import quant
from qvgen.models import get_family, save_student
from qvgen.quant import ClippedDynamicActivation, LSQPlusWeight, QuantConfig

REF_TENSORS = "diffusion_pytorch_model.safetensors"
REF_INDEX = "diffusion_pytorch_model.safetensors.index.json"
REF_CLIP_RATIO = 0.95
"""The reference's activation `clip_ratio` (applied on top of σ(ℓ))."""
CLASS_FAMILY = {"WanTransformer3DModel": "wan", "CogVideoXTransformer3DModel": "cogvideox"}
REQUIRED = ("w", "wquantizer.scale", "wquantizer.zero_point", "aquantizer.lower", "aquantizer.upper")
RENAME = {
    "w": "weight",
    "b": "bias",
    "wquantizer.scale": "weight_quantizer.scale",
    "wquantizer.zero_point": "weight_quantizer.zero_point",
    "aquantizer.lower": "act_quantizer.clip_logit_lo",
    "aquantizer.upper": "act_quantizer.clip_logit_hi",
}
GroupMapping = Literal["mod", "counter"]


class ReferenceImportError(ValueError):
    """A reference checkpoint that cannot be imported; the message names the key and the file."""


def read_reference(folder: Path) -> tuple[dict[str, Tensor], dict[str, Path], dict[str, Any]]:
    """All tensors of the folder (single file or sharded with an index), the file of each key, config.json."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ReferenceImportError(
            f"{config_path}: missing; a reference checkpoint is a diffusers transformer folder"
        )
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as e:
        raise ReferenceImportError(f"{config_path}: not valid JSON: {e}") from e
    if (folder / REF_INDEX).is_file():
        index_path = folder / REF_INDEX
        try:
            weight_map = json.loads(index_path.read_text()).get("weight_map", {})
        except (json.JSONDecodeError, AttributeError) as e:
            raise ReferenceImportError(f"{index_path}: not a valid safetensors index: {e}") from e
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise ReferenceImportError(f"{index_path}: weight_map must map keys to file names")
        files = sorted({folder / name for name in weight_map.values()})
    elif (folder / REF_TENSORS).is_file():
        files = [folder / REF_TENSORS]
    else:
        raise ReferenceImportError(f"{folder}: no {REF_TENSORS} (or {REF_INDEX}) here")
    tensors: dict[str, Tensor] = {}
    where: dict[str, Path] = {}
    for path in files:
        try:
            part = load_file(str(path))
        except (SafetensorError, OSError) as e:
            raise ReferenceImportError(f"{path}: cannot read the safetensors file ({e})") from e
        for key, value in part.items():
            tensors[key] = value
            where[key] = path
    return tensors, where, config


def convert_logits(ref_logits: Tensor) -> Tensor:
    """The reference's clip logits ℓ → qvgen's ℓ' with σ(ℓ') = 0.95·σ(ℓ) (float64 math, float32 result)."""
    p = REF_CLIP_RATIO * torch.sigmoid(ref_logits.double())
    return torch.log(p / (1 - p)).float()


def counter_table(ref: Tensor, timesteps: Sequence[float], calls_per_step: int) -> Tensor:
    """1000 logits (bin mode, g = ⌊t⌋) that reproduce the reference's sampling counter on `timesteps`."""
    groups = ref.shape[0]
    table = ref[torch.arange(1000) % groups].clone()  # `mod` semantics off the schedule
    owner: dict[int, tuple[int, int]] = {}  # integer timestep → (sampling step, group)
    for s, t in enumerate(timesteps):
        idx = min(max(math.floor(float(t)), 0), 999)
        group = max(groups - 1 - s * calls_per_step, 0)
        if idx in owner and owner[idx][1] != group:
            raise ReferenceImportError(
                f"sampling steps {owner[idx][0]} and {s} share the integer timestep {idx}; the counter mapping "
                "needs distinct timesteps per step (use --groups mod)"
            )
        owner[idx] = (s, group)
        table[idx] = ref[group]
    return table


def _layer_names(tensors: Mapping[str, Tensor], where: Mapping[str, Path]) -> list[str]:
    names = sorted({k[: -len(".wquantizer.scale")] for k in tensors if k.endswith(".wquantizer.scale")})
    for key in tensors:
        for bad in (".wquantizer.L", ".wquantizer.R"):
            if key.endswith(bad):
                raise ReferenceImportError(
                    f"{where[key]}: key {key!r}: the auxiliary branch Φ is still present (an intermediate "
                    "checkpoint); import the final transformer/ folder written after rank decay"
                )
    for name in names:
        for suffix in REQUIRED:
            if f"{name}.{suffix}" not in tensors:
                raise ReferenceImportError(
                    f"{where[name + '.wquantizer.scale']}: key {name}.{suffix!s} is missing: every quantized "
                    f"layer needs {', '.join(REQUIRED)}"
                )
    for key in tensors:
        for mine, other in ((".loraA.weight", ".loraB.weight"), (".loraB.weight", ".loraA.weight")):
            if key.endswith(mine) and key[: -len(mine)] + other not in tensors:
                raise ReferenceImportError(
                    f"{where[key]}: key {key!r} has no {key[: -len(mine)] + other} (LoRA factors come in pairs)"
                )
    for key in tensors:
        if key.endswith(".w") and key[:-2] not in names:
            raise ReferenceImportError(
                f"{where[key]}: key {key!r} has no {key[:-2]}.wquantizer.scale (quantizer params missing)"
            )
    return names


def _group_count(names: Sequence[str], tensors: Mapping[str, Tensor], where: Mapping[str, Path]) -> int:
    counts: dict[int, str] = {}
    for name in names:
        lo, hi = tensors[f"{name}.aquantizer.lower"], tensors[f"{name}.aquantizer.upper"]
        if lo.dim() != 1 or lo.shape != hi.shape:
            raise ReferenceImportError(
                f"{where[name + '.aquantizer.upper']}: key {name}.aquantizer.upper has shape {tuple(hi.shape)} but "
                f"{name}.aquantizer.lower has {tuple(lo.shape)}: mismatched group count"
            )
        counts.setdefault(lo.shape[0], f"{name}.aquantizer.lower")
    if len(counts) > 1:
        (g0, k0), (g1, k1) = list(counts.items())[:2]
        raise ReferenceImportError(
            f"{where[k1]}: key {k1} has {g1} groups but {k0} has {g0}: mismatched group count"
        )
    return next(iter(counts))


def import_reference(
    folder: str | Path,
    base: str | Path,
    out_dir: str | Path,
    *,
    family: str | None = None,
    weight_bits: int = 4,
    act_bits: int = 4,
    groups: GroupMapping = "mod",
    expected_groups: int | None = None,
    sampling_timesteps: Sequence[float] = (),
    calls_per_step: int | None = None,
    lora_scale: float = 1.0,
) -> Path:
    """Convert the reference checkpoint in `folder` into a qvgen student manifest in `out_dir`.

    `base` is the full diffusers folder of the model (VAE, text encoder, scheduler, fp transformer) the
    student is rebuilt from. `groups="counter"` needs `sampling_timesteps` (one per step).
    """
    folder, base = Path(folder), Path(base)
    tensors, where, config = read_reference(folder)
    cls = str(config.get("_class_name", ""))
    fam_name = family or CLASS_FAMILY.get(cls)
    if fam_name is None:
        raise ReferenceImportError(f"{folder / 'config.json'}: unknown _class_name {cls!r}; pass the family")
    fam = get_family(fam_name)
    names = _layer_names(tensors, where)
    if not names:
        raise ReferenceImportError(
            f"{folder}: no key ends in .wquantizer.scale: not a quantized reference checkpoint"
        )
    n_groups = _group_count(names, tensors, where)
    if expected_groups is not None and n_groups != expected_groups:
        key = f"{names[0]}.aquantizer.lower"
        raise ReferenceImportError(
            f"{where[key]}: key {key} has {n_groups} groups, expected {expected_groups}"
        )
    if groups == "counter" and not sampling_timesteps:
        raise ReferenceImportError(
            "groups='counter' needs the sampling timesteps of the schedule to reproduce"
        )
    calls = calls_per_step if calls_per_step is not None else (2 if fam_name == "wan" else 1)

    student = fam.load_transformer(base, dtype="float32")
    linears = {n for n, m in student.named_modules() if isinstance(m, nn.Linear)}
    missing_layers = sorted(set(names) - linears)
    if missing_layers:
        key = f"{missing_layers[0]}.wquantizer.scale"
        raise ReferenceImportError(
            f"{where[key]}: unknown key {key!r}: {cls or 'the model'} has no Linear {missing_layers[0]!r}"
        )
    mode: Literal["bin", "mod"] = "mod" if groups == "mod" else "bin"
    cfg = QuantConfig(
        weight=LSQPlusWeight(bits=weight_bits),
        activation=ClippedDynamicActivation(
            bits=act_bits, groups=n_groups if groups == "mod" else 1000, group_mode=mode
        ),
    )
    keep = tuple(sorted(glob_escape(n) for n in linears - set(names)))
    quant.prepare_(
        student,
        cfg,
        layer_roles={glob_escape(n): r for n, r in _roles(fam, names).items()},
        keep_high_precision=keep,
        num_train_timesteps=fam.num_train_timesteps,
    )

    state = student.state_dict()
    new: dict[str, Tensor] = {}
    for key, value in tensors.items():
        target, converted = _map_key(
            key, value, names, tensors, groups, sampling_timesteps, calls, lora_scale
        )
        if target is None:
            continue
        if target not in state:
            raise ReferenceImportError(
                f"{where[key]}: unknown key {key!r} (no {target!r} in the qvgen student)"
            )
        if tuple(converted.shape) != tuple(state[target].shape):
            raise ReferenceImportError(
                f"{where[key]}: key {key!r} has shape {tuple(value.shape)}, the model needs {tuple(state[target].shape)}"
            )
        new[target] = converted.to(state[target].dtype)
    result = student.load_state_dict(
        new, strict=False
    )  # quantizer-derived buffers are filled by their loaders
    if result.missing_keys:
        raise ReferenceImportError(
            f"{folder}: the checkpoint lacks {len(result.missing_keys)} tensors of the model, "
            f"e.g. {result.missing_keys[:3]}"
        )
    return save_student(
        student, out_dir, family=fam_name, checkpoint=base, quant_config=cfg,  # type: ignore[arg-type]
        run_config={"imported_from": str(folder.resolve()), "group_mapping": groups, "reference_groups": n_groups,
                    "calls_per_step": calls, "sampling_timesteps": [float(t) for t in sampling_timesteps]},
    )  # fmt: skip


def glob_escape(name: str) -> str:
    """A module name as an fnmatch pattern matching only itself."""
    import glob

    return glob.escape(name)


def _roles(fam: Any, names: Sequence[str]) -> dict[str, Any]:
    return {n: quant.resolve_role(n, fam.layer_roles) for n in names}


def _map_key(
    key: str,
    value: Tensor,
    names: Sequence[str],
    tensors: Mapping[str, Tensor],
    groups: GroupMapping,
    timesteps: Sequence[float],
    calls: int,
    lora_scale: float,
) -> tuple[str | None, Tensor]:
    layer, _, suffix = key.rpartition(".")
    for ref_suffix in ("wquantizer.scale", "wquantizer.zero_point", "aquantizer.lower", "aquantizer.upper"):
        if key.endswith("." + ref_suffix):
            layer, suffix = key[: -len(ref_suffix) - 1], ref_suffix
    if key.endswith(".loraA.weight") or key.endswith(".loraB.weight"):
        return None, value  # merged into `.w` below
    if layer not in names:
        return key, value  # an unquantized tensor: diffusers name
    if suffix not in RENAME:
        return f"<unknown>{key}", value  # reported by the caller as an unknown key
    target = f"{layer}.{RENAME[suffix]}"
    if suffix == "w" and f"{layer}.loraA.weight" in tensors:
        a, b = tensors[f"{layer}.loraA.weight"].float(), tensors[f"{layer}.loraB.weight"].float()
        return target, value.float() + lora_scale * (b @ a)
    if suffix in ("aquantizer.lower", "aquantizer.upper"):
        logits = convert_logits(value)
        return target, logits if groups == "mod" else counter_table(logits, timesteps, calls)
    return target, value
