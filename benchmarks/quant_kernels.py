"""CPU timing of fp32 F.linear vs fake-quant QuantLinear vs deploy W4A4 DeployLinear on Wan-1.3B linear
shapes, and the weight memory of the tiny and the real-config Wan transformer (bf16 vs packed int4).

    python benchmarks/quant_kernels.py --quick     # a few minutes on the 2-core CI box
    python benchmarks/quant_kernels.py             # token counts 1k, 2k, 4k, 8k

One intra-op thread. Timings are the median of `--repeats` round-robin calls after one warm-up call (the warm-up
also builds the deploy layer's cached FBGEMM weight). The last line is machine-readable:
`quant_kernels weight_mem_ratio=<bf16/deploy bytes, real Wan 1.3B linears> w4a4_over_fp32_cpu=<median
deploy/fp32 time over shapes> max_rel_err=<deploy vs fake-quant, max-norm relative>`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from qvgen.quant import (
    ClippedDynamicActivation,
    DeployLinear,
    MinMaxWeight,
    QuantConfig,
    QuantLinear,
    initialize_,
    packed_columns,
    prepare_,
    set_timesteps_,
)

WAN_SHAPES = [(1536, 1536), (1536, 8960), (8960, 1536), (4096, 1536)]  # (in, out)

WAN_1_3B = dict(
    patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16,
    text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
    qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024,
)  # fmt: skip
WAN_TINY = dict(
    patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=64, in_channels=16, out_channels=16,
    text_dim=64, freq_dim=256, ffn_dim=256, num_layers=2, cross_attn_norm=True,
    qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=32,
)  # fmt: skip


def median_ms(fns: list[Callable[[], object]], repeats: int) -> list[float]:
    """Median wall time of each function, called round-robin so load drift on a shared box hits all alike."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, t in zip(fns, times, strict=True):
            t0 = time.perf_counter()
            fn()
            t.append(time.perf_counter() - t0)
    return [1000 * statistics.median(t) for t in times]


def trained_pair(in_f: int, out_f: int) -> tuple[nn.Module, QuantLinear, DeployLinear]:
    """A W4A4 QuantLinear (min-max init, zero points moved off the grid) and its DeployLinear."""
    linear = nn.Linear(in_f, out_f)
    with torch.no_grad():
        linear.weight.normal_(0, 0.02)
    model = nn.Sequential(linear)
    prepare_(model, QuantConfig(weight=MinMaxWeight(bits=4), activation=ClippedDynamicActivation(bits=4)))
    initialize_(model, progress=False)
    fake = model[0]
    assert isinstance(fake, QuantLinear)
    with torch.no_grad():
        fake.weight_quantizer.zero_point.add_(torch.rand_like(fake.weight_quantizer.zero_point) - 0.5)
        fake.act_quantizer.clip_logit_lo.uniform_(1.0, 4.0)
        fake.act_quantizer.clip_logit_hi.uniform_(1.0, 4.0)
    return model, fake, DeployLinear.from_quant_linear(fake)


def time_shapes(tokens: list[int], repeats: int) -> tuple[list[float], float]:
    print(
        f"{'in->out':>11} {'tokens':>6} {'fp32 ms':>9} {'fake ms':>9} {'W4A4 ms':>9} {'W4A4/fp32':>9} {'rel err':>9}"
    )
    ratios, max_err = [], 0.0
    for in_f, out_f in WAN_SHAPES:
        model, fake, deploy = trained_pair(in_f, out_f)
        weight, bias = fake.weight.detach(), fake.bias.detach() if fake.bias is not None else None
        set_timesteps_(model, torch.tensor([500.0]))
        for m in tokens:
            x = torch.randn(1, m, in_f)
            with torch.no_grad():
                t_fp32, t_fake, t_deploy = median_ms(
                    [partial(F.linear, x, weight, bias), partial(fake, x), partial(deploy, x)], repeats
                )
                y_fake, y_deploy = fake(x), deploy(x)
            err = float((y_deploy - y_fake).abs().max() / y_fake.abs().max())
            max_err = max(max_err, err)
            ratios.append(t_deploy / t_fp32)
            print(
                f"{in_f:>5}->{out_f:<5} {m:>6} {t_fp32:>9.1f} {t_fake:>9.1f} {t_deploy:>9.1f} "
                f"{t_deploy / t_fp32:>9.3f} {err:>9.1e}"
            )
    return ratios, max_err


def linear_bytes(model: nn.Module) -> tuple[int, int, int]:
    """(bf16 bytes, deploy bytes, int8-prepacked bytes) of every nn.Linear weight (biases excluded)."""
    bf16 = deploy = int8 = 0
    for m in model.modules():
        if isinstance(m, nn.Linear):
            n, k = m.out_features, m.in_features
            bf16 += 2 * n * k
            deploy += n * packed_columns(k) + 2 * 4 * n  # packed int4 + fp32 scale and zero point per row
            int8 += n * k
    return bf16, deploy, int8


def weight_memory() -> float:
    from diffusers import WanTransformer3DModel

    ratio = 0.0
    print(
        f"\n{'model':>14} {'linears':>7} {'bf16 MiB':>10} {'deploy MiB':>10} {'ratio':>6} {'whole-model ratio':>17}"
    )
    for label, cfg, device in [("Wan tiny", WAN_TINY, "cpu"), ("Wan 1.3B meta", WAN_1_3B, "meta")]:
        with torch.device(device):
            model: nn.Module = WanTransformer3DModel(**cfg)  # type: ignore[assignment]
        bf16, deploy, _ = linear_bytes(model)
        n_linear = sum(isinstance(m, nn.Linear) for m in model.modules())
        # everything that is not a Linear weight (biases, norms, conv patch embed, tables) stays bf16
        rest = 2 * sum(p.numel() for p in model.parameters()) - bf16
        whole = (bf16 + rest) / (deploy + rest)
        ratio = bf16 / deploy
        print(
            f"{label:>14} {n_linear:>7} {bf16 / 2**20:>10.2f} {deploy / 2**20:>10.2f} {ratio:>6.2f} {whole:>17.2f}"
        )
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="token counts 1k and 2k, 3 repeats")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    tokens = [1024, 2048] if args.quick else [1024, 2048, 4096, 8192]
    repeats = args.repeats or 3
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, tokens {tokens}, repeats {repeats}")
    ratios, max_err = time_shapes(tokens, repeats)
    mem_ratio = weight_memory()
    print(
        f"quant_kernels weight_mem_ratio={mem_ratio:.2f} "
        f"w4a4_over_fp32_cpu={statistics.median(ratios):.3f} max_rel_err={max_err:.1e}"
    )


if __name__ == "__main__":
    main()
