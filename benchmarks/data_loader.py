"""Loader throughput on Wan 2.1 1.3B-sized latent shards (qvgen.data).

Writes N samples of 16×13×60×104 bf16 latent mean + logvar and 512×4096 bf16 text embeddings
(~9.4 MB per sample) as webdataset shards into a temporary folder under /tmp, reads them back with
`make_loader` (eval mode: one exact pass, batch 1, 2 workers), deletes the folder and prints

    data_loader samples_per_s=<float> mb_per_s=<float>

as its last line. One H100 trains QVGen on Wan 1.3B at ~1-2 samples/s; the margin is printed too.

    python benchmarks/data_loader.py --quick      # 192 samples (~1.8 GB on disk)
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from qvgen.data import EncodedSample, LoaderConfig, WriterConfig, make_loader, read_manifest, write_shards

LATENT = (16, 13, 60, 104)  # Wan 2.1 VAE latents of a 49×480×832 clip
TEXT = (512, 4096)  # UMT5-XXL, max_length 512
H100_SAMPLES_PER_S = 2.0  # upper end of QVGen training speed on Wan 1.3B per H100


def _samples(n: int) -> Iterator[EncodedSample]:
    gen = torch.Generator().manual_seed(0)
    for i in range(n):
        length = int(torch.randint(8, TEXT[0] + 1, (), generator=gen))
        text = torch.randn(TEXT, generator=gen, dtype=torch.float32).to(torch.bfloat16)
        text[length:] = 0
        yield EncodedSample(
            id=f"bench/{i:06d}",
            caption=f"benchmark clip {i}",
            latents_mean=torch.randn(LATENT, generator=gen).to(torch.bfloat16),
            latents_logvar=(torch.randn(LATENT, generator=gen) - 4).to(torch.bfloat16),
            text_embeddings=text,
            text_length=length,
            video_shape=(49, 480, 832),
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="192 samples (default 512)")
    parser.add_argument("--samples", type=int, default=None)
    parser.add_argument("--samples-per-shard", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1)
    args = parser.parse_args()
    n = args.samples or (192 if args.quick else 512)
    torch.set_num_threads(1)

    root = Path(tempfile.mkdtemp(prefix="qvgen-data-bench-", dir="/tmp"))
    try:
        t0 = time.perf_counter()
        cfg = WriterConfig(samples_per_shard=args.samples_per_shard, family="wan")
        write_shards(_samples(n), root, cfg, encoder_name="synthetic-wan-1.3b-shapes")
        write_s = time.perf_counter() - t0
        manifest = read_manifest(root)
        total_bytes = sum(s.num_bytes for s in manifest.shards)
        print(
            f"wrote {n} samples, {len(manifest.shards)} shards, {total_bytes / 1e6:.0f} MB in {write_s:.1f} s"
        )

        loader_cfg = LoaderConfig(
            shards=root, mode="eval", batch_size=args.batch_size, num_workers=args.workers
        )
        t0 = time.perf_counter()
        seen = 0
        checksum = 0.0
        for batch in make_loader(loader_cfg):
            seen += batch.batch_size
            checksum += float(batch.latents_mean[:, 0, 0, 0, 0].float().sum())  # touch the data
        read_s = time.perf_counter() - t0
        if seen != n:
            raise SystemExit(f"loader returned {seen} samples, wrote {n}")
    finally:
        shutil.rmtree(root, ignore_errors=True)

    samples_per_s = n / read_s
    mb_per_s = total_bytes / 1e6 / read_s
    print(
        f"read {n} samples in {read_s:.1f} s with {args.workers} workers, batch {args.batch_size} "
        f"(files were just written: mostly page cache); margin over {H100_SAMPLES_PER_S:g} samples/s per H100: "
        f"{samples_per_s / H100_SAMPLES_PER_S:.1f}x"
    )
    print(f"data_loader samples_per_s={samples_per_s:.2f} mb_per_s={mb_per_s:.1f}")


if __name__ == "__main__":
    main()
