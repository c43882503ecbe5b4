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

Activation groups. The reference picks a clip group per transformer call in three different ways:
- training: `idx = int(t[0]) mod G` (first sample's timestep for the whole batch);
- sampling with `--fix` (its released inference scripts): a per-layer counter reset before every pipeline
  call and decremented by every transformer call, so the k-th call (k = 1, 2, ...) of a sampling run uses
  group G − k while k ≤ G, then 0. Wan's pipeline makes two calls per step under CFG (conditional, then
  unconditional): step s uses 49 − 2s and 48 − 2s for s ≤ 24, then group 0 (G = 50, 50 steps);
- sampling without `--fix`: the counter is never used and its initial index −1 selects group G − 1 for
  every call.
Three mappings are offered:
- `reference` (with `reference_fix=True`, the default, or False for the no-`--fix` behaviour): the way to
  reproduce the released checkpoints' own videos. G groups, `group_mode: reference` (`reference_nofix`):
  the shared timestep context counts the transformer calls of each sampling run (`qvgen.quant`'s
  `reference_call_groups` lists the groups per call), so every call, conditional and unconditional, gets
  the reference's group for any scheduler and step count. It inherits the reference's quirks: the groups
  follow the call count, not the noise level, and steps past G / 2 (Wan, CFG) all share group 0.
The two corrected mappings derive the group from each sample's own timestep:
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

Checks. What the importer reads is checked before the base model is loaded, each refusal a one-line
`ReferenceImportError` naming the key and the file: scales finite and > 0, zero points, clip logits, latent
weights and LoRA factors finite (a NaN clip logit of one group would give NaN output at that group's calls;
a scale ≤ 0 would be floored and zero its row). The weight width is read from the codes round(w/s + z):
the smallest b with at most 10 % of the codes outside [0, 2^b − 1] (a trained W4 checkpoint has a few
codes past 15; read as 3-bit about half fall outside [0, 7]). `weight_bits` defaults to it and a
contradicting one is refused; `act_bits` (not recorded by the reference) defaults to the weight width,
as in every released WnAn checkpoint.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from qvgen import quant
from qvgen.core import (
    MARKER_NAME,
    Provenance,
    check_disjoint,
    check_provenance,
    is_tool_output,
    replace_output_dir,
    tree_fingerprint,
    write_provenance,
)
from qvgen.models import get_family, save_student
from qvgen.quant import ClippedDynamicActivation, GroupMode, LSQPlusWeight, QuantConfig

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
IMPORT_TOOL = "qvgen-train import-reference"
"""The tool name in the output folder's marker and provenance record."""
IMPORT_PROVENANCE = ".qvgen-import.json"
"""What an import was made from (checkpoint fingerprint, base, bits, group mapping), beside the manifest."""
GroupMapping = Literal["mod", "counter", "reference"]
OUT_OF_RANGE_TOLERANCE = 0.10
"""Share of weight codes that may fall outside [0, 2^b − 1] for the checkpoint still to read as b-bit."""
MAX_WEIGHT_BITS = 8


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
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as e:  # JSONDecodeError, not UTF-8, an int past 4300 digits, too deep
        raise ReferenceImportError(f"{config_path}: not valid JSON: {e}") from e
    if not isinstance(config, dict):
        raise ReferenceImportError(
            f"{config_path}: expected a JSON object (the diffusers config), got {type(config).__name__}"
        )
    if (folder / REF_INDEX).is_file():
        index_path = folder / REF_INDEX
        try:
            weight_map = json.loads(index_path.read_text(encoding="utf-8")).get("weight_map", {})
        except (ValueError, RecursionError, AttributeError) as e:
            raise ReferenceImportError(f"{index_path}: not a valid safetensors index: {e}") from e
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise ReferenceImportError(f"{index_path}: weight_map must map keys to file names")
        outside = sorted({v for v in weight_map.values() if not v or Path(v).name != v or v in (".", "..")})
        if outside:  # an index is data: it names files beside it, never paths elsewhere
            raise ReferenceImportError(
                f"{index_path}: weight_map names {outside[:3]}; expected bare file names in {folder}"
            )
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
            why = " ".join(str(e).split())  # safetensors quotes the header, line breaks included
            raise ReferenceImportError(f"{path}: cannot read the safetensors file ({why})") from e
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


def _check_values(names: Sequence[str], tensors: Mapping[str, Tensor], where: Mapping[str, Path]) -> None:
    """Refuse non-finite quantizer parameters, weights and LoRA factors, and scales that are not > 0."""
    for name in names:
        for suffix in ("w", "wquantizer.scale", "wquantizer.zero_point", "aquantizer.lower", "aquantizer.upper",
                       "loraA.weight", "loraB.weight"):  # fmt: skip
            key = f"{name}.{suffix}"
            value = tensors.get(key)
            if value is None or not value.is_floating_point():
                continue
            bad = ~torch.isfinite(value)
            if bool(bad.any()):
                first = [int(i) for i in bad.nonzero()[0]]
                where_bad = (
                    f"group {first[0]}" if suffix.startswith("aquantizer") else f"index {tuple(first)}"
                )
                raise ReferenceImportError(
                    f"{where[key]}: key {key}: {int(bad.sum())} non-finite value(s), first at {where_bad} "
                    f"({float(value[tuple(first)]):.6g}); the checkpoint is damaged"
                )
            if suffix == "wquantizer.scale" and bool((value <= 0).any()):
                first = [int(i) for i in (value <= 0).nonzero()[0]]
                raise ReferenceImportError(
                    f"{where[key]}: key {key}: scales must be > 0, row {first[0]} is {float(value[tuple(first)]):.6g} "
                    "(it would zero the row); the checkpoint is damaged"
                )


def infer_weight_bits(
    names: Sequence[str], tensors: Mapping[str, Tensor], lora_scale: float = 1.0
) -> tuple[int | None, dict[str, Any]]:
    """The weight width the codes round(w/s + z) imply, and the evidence.

    The smallest b ≤ 8 with at most `OUT_OF_RANGE_TOLERANCE` of all codes outside [0, 2^b − 1] (None when
    no layer has a usable shape, or when no b ≤ 8 fits). The evidence: `total`, `below` (codes < 0),
    `above` {b: codes > 2^b − 1}, per layer its largest code (`max_code`) and `worst` {b: the layer with
    the most codes outside [0, 2^b − 1]}.
    """
    bit_range = range(2, MAX_WEIGHT_BITS + 1)
    total = below = 0
    above = dict.fromkeys(bit_range, 0)
    outside: dict[int, tuple[int, str]] = {}
    max_code: dict[str, int] = {}
    for name in names:
        w, s, z = (tensors[f"{name}.{k}"] for k in ("w", "wquantizer.scale", "wquantizer.zero_point"))
        if w.dim() != 2 or s.shape != (w.shape[0], 1) or z.shape != s.shape:
            continue  # reported with its key by the shape checks
        w = w.float()
        a, b = tensors.get(f"{name}.loraA.weight"), tensors.get(f"{name}.loraB.weight")
        if a is not None and b is not None:
            if (
                a.dim() != 2
                or b.dim() != 2
                or (b.shape[0], a.shape[1]) != tuple(w.shape)
                or a.shape[0] != b.shape[1]
            ):
                continue
            w = w + lora_scale * (b.float() @ a.float())
        codes = torch.round(w / s.float() + z.float())
        if codes.numel() == 0:
            continue
        n_below = int((codes < 0).sum())
        total += codes.numel()
        below += n_below
        max_code[name] = int(codes.max())
        for bits in bit_range:
            n_above = int((codes > 2**bits - 1).sum())
            above[bits] += n_above
            if n_below + n_above > outside.get(bits, (-1, ""))[0]:
                outside[bits] = (n_below + n_above, name)
    evidence: dict[str, Any] = {"total": total, "below": below, "above": above, "max_code": max_code,
                                "worst": {b: n for b, (_, n) in outside.items()}}  # fmt: skip
    if total == 0:
        return None, evidence
    for bits in bit_range:
        if (below + above[bits]) / total <= OUT_OF_RANGE_TOLERANCE:
            return bits, evidence
    return None, evidence


def _resolve_weight_bits(
    requested: int | None, names: Sequence[str], tensors: Mapping[str, Tensor], where: Mapping[str, Path],
    lora_scale: float,
) -> int:  # fmt: skip
    inferred, ev = infer_weight_bits(names, tensors, lora_scale)
    if inferred is None and ev["total"] == 0:
        return requested if requested is not None else 4  # no usable layer: the shape checks report it
    if inferred is None:
        name = ev["worst"][MAX_WEIGHT_BITS]
        key = f"{name}.wquantizer.scale"
        share = (ev["below"] + ev["above"][MAX_WEIGHT_BITS]) / ev["total"]
        raise ReferenceImportError(
            f"{where[key]}: key {key}: {share:.0%} of the weight codes round(w/s + z) fall outside [0, 255] "
            f"(most in {name}): the scales and zero points do not quantize these weights at any width ≤ 8"
        )
    if requested is None or requested == inferred:
        return inferred
    if requested < inferred:
        name = ev["worst"][requested]
        share = (ev["below"] + ev["above"][requested]) / ev["total"]
        why = f"{share:.0%} of them fall outside [0, {2**requested - 1}] (most in {name})"
    else:
        name = max(ev["max_code"], key=ev["max_code"].__getitem__)
        why = f"the largest is {ev['max_code'][name]} of {2**requested - 1} (in {name})"
    key = f"{name}.wquantizer.scale"
    raise ReferenceImportError(
        f"{where[key]}: key {key}: the weight codes round(w/s + z) imply {inferred}-bit weights, not "
        f"--weight-bits {requested}: {why}; pass --weight-bits {inferred} or leave it out"
    )


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
    weight_bits: int | None = None,
    act_bits: int | None = None,
    groups: GroupMapping = "mod",
    reference_fix: bool = True,
    expected_groups: int | None = None,
    sampling_timesteps: Sequence[float] = (),
    calls_per_step: int | None = None,
    lora_scale: float = 1.0,
    overwrite: bool = False,
) -> Path:
    """Convert the reference checkpoint in `folder` into a qvgen student manifest in `out_dir`.

    `out_dir` must be new, empty or an earlier import's output (`_check_out_dir`); an earlier import made
    from other inputs (checkpoint, base, bits, groups, ...) is replaced only with `overwrite`.

    `base` is the full diffusers folder of the model (VAE, text encoder, scheduler, fp transformer) the
    student is rebuilt from. `groups="counter"` needs `sampling_timesteps` (one per step).
    `groups="reference"` replays the reference's sampling call counter (`reference_fix`: its `--fix`
    flag, on in its released scripts): the mode that reproduces the released checkpoints' own videos.
    `weight_bits` (default: read from the codes) must agree with the codes; `act_bits` defaults to it.
    """
    folder, base = Path(folder), Path(base)
    out = _check_out_dir(out_dir, folder, base)  # before any work: never --base, never a user's folder
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
    _check_values(names, tensors, where)
    weight_bits = _resolve_weight_bits(weight_bits, names, tensors, where, lora_scale)
    if act_bits is None:
        act_bits = weight_bits
    if not reference_fix and groups != "reference":
        raise ReferenceImportError(
            f"reference_fix=False (--no-reference-fix) only applies to groups='reference', not {groups!r}"
        )
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
    mode: GroupMode = "mod"
    if groups == "counter":
        mode = "bin"
    elif groups == "reference":
        mode = "reference" if reference_fix else "reference_nofix"
    cfg = QuantConfig(
        weight=LSQPlusWeight(bits=weight_bits),
        activation=ClippedDynamicActivation(
            bits=act_bits, groups=1000 if groups == "counter" else n_groups, group_mode=mode
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
    run_config = {"imported_from": str(folder.resolve()), "group_mapping": groups, "reference_groups": n_groups,
                  "reference_fix": reference_fix, "weight_bits": weight_bits, "act_bits": act_bits,
                  "calls_per_step": calls, "sampling_timesteps": [float(t) for t in sampling_timesteps]}  # fmt: skip
    provenance = Provenance.of(
        IMPORT_TOOL,
        {**run_config, "imported_from": tree_fingerprint(folder), "base": str(base.resolve()), "family": fam_name,
         "lora_scale": lora_scale},
    )  # fmt: skip
    if not overwrite:
        remedy = "pass --overwrite to replace it, or choose another --out"
        check_provenance(out / IMPORT_PROVENANCE, provenance, out, remedy)

    def write(tmp: Path) -> None:  # save_student replaces its folder whole: build it inside, then move up
        built = save_student(
            student, tmp / ".student", family=fam_name, checkpoint=base, quant_config=cfg,  # type: ignore[arg-type]
            run_config=run_config,
        )  # fmt: skip
        for item in built.iterdir():  # all but save_student's own marker: the folder is import-reference's
            if item.name == MARKER_NAME:
                item.unlink()
            else:
                os.replace(item, tmp / item.name)
        built.rmdir()
        write_provenance(tmp / IMPORT_PROVENANCE, provenance)

    return replace_output_dir(out, IMPORT_TOOL, write, (folder, base), what="--out folder")


def _check_out_dir(out_dir: str | Path, folder: Path, base: Path) -> Path:
    """`out_dir` resolved; refused if it overlaps the checkpoint or the base model, or holds anything that an
    earlier `import-reference` did not write (the folder is replaced whole at the end)."""
    out = check_disjoint(out_dir, (folder, base), "--out folder")
    if out.exists() and not out.is_dir():
        raise ValueError(f"the --out folder {out} is a file; choose a folder")
    if out.is_dir() and any(out.iterdir()) and not is_tool_output(out, IMPORT_TOOL):
        raise ValueError(
            f"the --out folder {out} is not empty and was not written by {IMPORT_TOOL}; it would be replaced "
            "whole: choose a new or empty folder"
        )
    return out


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
        return target, counter_table(logits, timesteps, calls) if groups == "counter" else logits
    return target, value
