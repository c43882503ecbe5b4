"""Issue 35's check line: diffusers' LoRA API on a W4A4 deploy pipeline, its numerics, and its cost when idle.

On a tiny W4A4 Wan (with SVDQuant's kept branch) built here:
- diffusers_api_ok: `load_lora_weights` (two adapters), `set_adapters` with weights, `disable_lora` /
  `enable_lora`, `fuse_lora` / `unfuse_lora`, `unload_lora_weights` all run on a `load_pipeline` pipeline and
  each changes (or restores) the output as diffusers documents;
- deploy_vs_fakequant_rel_err: the same LoRA on the deploy pipeline and on the fake-quant student
  (`load_student`), transformer output, max |Δ| / max |ref|;
- weight0_bitwise / unload_bitwise: adapter weight 0 and `unload_lora_weights` give the LoRA-free output bit
  for bit;
- no_lora_overhead: the deploy transformer's forward time after a LoRA was loaded and unloaded (the LoRA
  machinery present, no adapter) over a freshly loaded one that never saw a LoRA (same run, median of
  21 repeats in alternating order, one thread).
The `effect_*` entries are the fractions of held-out videos turned red by the colour LoRA, read from the
`lora_effect` line that `benchmarks/lora_effect.py` wrote into `## lora` of RESULTS.md (its own run; 7 min).

Usage: python benchmarks/lora_api.py (≈ 1 min).
"""

from __future__ import annotations

import dataclasses
import re
import statistics
import tempfile
import time
from pathlib import Path

import torch

from qvgen import quant
from qvgen.models import get_family, load_pipeline, load_student, save_student
from qvgen.quant.testing import randomize_kept_branches_

RESULTS = Path(__file__).with_name("RESULTS.md")
TARGETS = ("blocks.0.attn1.to_q", "blocks.0.attn2.to_k", "blocks.1.ffn.net.0.proj", "blocks.1.ffn.net.2")


def build(root: Path) -> tuple[Path, Path, Path]:
    """(base, fake-quant student, deploy) folders of one tiny W4A4 Wan with a non-trivial kept branch."""
    base = get_family("wan").save_tiny(root / "base")
    cfg = quant.QuantConfig.w4a4().model_copy(update={"kept_lowrank": quant.KeptLowRank(rank=4)})
    student = get_family("wan").load_transformer(base)
    quant.prepare_(student, cfg)
    quant.initialize_(student, progress=False)
    randomize_kept_branches_(student)
    save_student(student.eval(), root / "student", family="wan", checkpoint=base, quant_config=cfg)
    quant.convert_(student)
    quant.save_quantized(student, root / "deploy", identity=str(base))
    return base, root / "student", root / "deploy"


def lora(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """A rank-4 LoRA in diffusers' PEFT key format on `TARGETS`."""
    g = torch.Generator().manual_seed(seed)
    modules = dict(model.named_modules())
    sd = {}
    for name in TARGETS:
        m = modules[name]
        sd[f"transformer.{name}.lora_A.weight"] = torch.randn(4, m.in_features, generator=g) * 0.2
        sd[f"transformer.{name}.lora_B.weight"] = torch.randn(m.out_features, 4, generator=g) * 0.2
    return sd


def inputs(frames: int = 3, size: int = 8) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "hidden_states": torch.randn(1, 16, frames, size, size, generator=g),
        "timestep": torch.tensor([437.5]),
        "encoder_hidden_states": torch.randn(1, 16, 64, generator=g),
    }


def forward(model: torch.nn.Module, x: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    with torch.no_grad():
        return model(**(x or inputs()), return_dict=False)[0]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def api_checks(base: Path, student_dir: Path, deploy: Path) -> dict[str, object]:
    pipe = load_pipeline(base, deploy)
    plain = forward(pipe.transformer)
    first, second = lora(pipe.transformer, 1), lora(pipe.transformer, 2)
    pipe.load_lora_weights(first, adapter_name="a")
    with_a = forward(pipe.transformer)
    pipe.load_lora_weights(second, adapter_name="b")
    pipe.set_adapters(["a", "b"], adapter_weights=[1.0, 0.5])
    mixed = forward(pipe.transformer)
    pipe.set_adapters(["a", "b"], adapter_weights=[0.0, 0.0])
    weight0 = torch.equal(forward(pipe.transformer), plain)
    pipe.set_adapters(["a"], adapter_weights=[1.0])
    pipe.disable_lora()
    disabled = torch.equal(forward(pipe.transformer), plain)
    pipe.enable_lora()
    enabled = torch.equal(forward(pipe.transformer), with_a)
    pipe.fuse_lora(adapter_names=["a"])
    fused = rel_err(forward(pipe.transformer), with_a) < 1e-5
    pipe.unfuse_lora()
    pipe.unload_lora_weights()
    unload = torch.equal(forward(pipe.transformer), plain)

    student = load_pipeline(base, deploy)  # deploy + LoRA vs the fake-quant student + the same LoRA
    fake = load_student(student_dir)
    student.load_lora_weights(first, adapter_name="a")
    fake_pipe = get_family("wan").pipeline(
        dataclasses.replace(get_family("wan").load(base), transformer=fake)
    )
    fake_pipe.load_lora_weights(first, adapter_name="a")
    err = rel_err(forward(student.transformer), forward(fake_pipe.transformer))
    api_ok = (
        not torch.equal(with_a, plain) and not torch.equal(mixed, with_a) and disabled and enabled and fused
    )
    return {"api": api_ok, "err": err, "weight0": weight0, "unload": unload}


def overhead(base: Path, deploy: Path, repeats: int = 21) -> tuple[float, float, float]:
    """Median forward seconds (fresh, after load + unload) and their ratio, interleaved."""
    fresh = quant.load_quantized(deploy)
    used = load_pipeline(base, deploy)
    used.load_lora_weights(lora(used.transformer, 3), adapter_name="x")
    used.unload_lora_weights()
    x = inputs(frames=5, size=32)
    forward(fresh, x), forward(used.transformer, x)  # warm-up
    times: dict[int, list[float]] = {0: [], 1: []}
    models = (fresh, used.transformer)
    for i in range(repeats):
        for which in (0, 1) if i % 2 == 0 else (1, 0):  # alternate the order: neither always runs second
            t = time.perf_counter()
            forward(models[which], x)
            times[which].append(time.perf_counter() - t)
    a, b = times[0], times[1]
    return statistics.median(a), statistics.median(b), statistics.median(b) / statistics.median(a)


def effect_fractions() -> dict[str, str]:
    """red_fraction_* of the recorded lora_effect run (RESULTS.md `## lora`)."""
    match = re.search(r"`lora (red_fraction_teacher=[^`]*)`", RESULTS.read_text())
    if match is None:
        return {"fp": "nan", "rtn": "nan", "qvgen": "nan"}
    values = dict(item.split("=") for item in match.group(1).split())
    return {
        "fp": values["red_fraction_teacher_lora"],
        "rtn": values["red_fraction_rtn_lora"],
        "qvgen": values["red_fraction_qvgen_lora"],
    }


def main() -> int:
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="qvgen-lora-api-"))
    base, student, deploy = build(root)
    checks = api_checks(base, student, deploy)
    plain_s, used_s, ratio = overhead(base, deploy)
    eff = effect_fractions()
    print("| check | value |\n| --- | --- |")
    print(
        f"| diffusers API (two adapters, set_adapters, disable/enable, fuse/unfuse, unload) | {checks['api']} |"
    )
    print(f"| deploy + LoRA vs fake-quant + LoRA, rel. err | {checks['err']:.2e} |")
    print(f"| adapter weight 0 == LoRA-free (bitwise) | {checks['weight0']} |")
    print(f"| unload_lora_weights == LoRA-free (bitwise) | {checks['unload']} |")
    print(
        f"| deploy forward, never a LoRA / after load+unload (s, median of 21, alternating) | {plain_s:.4f} / {used_s:.4f} |"
    )
    print(
        f"lora diffusers_api_ok={str(checks['api']).lower()} deploy_vs_fakequant_rel_err={checks['err']:.2e} "
        f"unload_bitwise={str(checks['unload']).lower()} weight0_bitwise={str(checks['weight0']).lower()} "
        f"effect_fp={eff['fp']} effect_rtn_w4a4={eff['rtn']} effect_qvgen_w4a4={eff['qvgen']} "
        f"no_lora_overhead={ratio:.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
