"""`PipelineEncoder`: qvgen.data's `VideoEncoder` over a family's VAE, tokenizer and text encoder."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from qvgen.data import LatentMoments, TextEmbeddings

_LIBRARY_KEYS = frozenset({"transformers_version"})
"""Config keys that record the installed library, not the model (diffusers' own start with "_")."""


def config_digest(*configs: Any) -> str:
    """Short sha256 over JSON dumps of configs (identity of a checkpoint's encoders); the same model under
    another transformers/diffusers version keeps its digest."""
    h = hashlib.sha256()
    for cfg in configs:
        as_dict = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
        as_dict = {k: v for k, v in as_dict.items() if not k.startswith("_") and k not in _LIBRARY_KEYS}
        h.update(json.dumps(as_dict, sort_keys=True, default=str).encode())
    return h.hexdigest()[:12]


def weights_digest(*modules: torch.nn.Module, samples: int = 256) -> str:
    """Short sha256 over every tensor of `modules`' state dicts: name, shape, dtype and the exact values of
    `samples` evenly spaced elements (as float32).

    Two checkpoints with the same configs but different training (e.g. a taught and a random text encoder)
    get different digests; the sampling keeps it cheap for multi-GB encoders (no full pass over the weights,
    one small device-to-host copy per tensor)."""
    h = hashlib.sha256()
    for module in modules:
        for name, tensor in sorted(module.state_dict().items()):
            h.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
            if tensor.is_meta:  # no values to read (a model built on the meta device)
                continue
            flat = tensor.detach().reshape(-1)
            if flat.numel() > samples:
                # float32 linspace rounds its last point up past the end above 2**24 elements (a real-width
                # UMT5 block: 41943040); clamping keeps every smaller tensor's indices, hence its digest
                index = torch.linspace(0, flat.numel() - 1, samples, device=flat.device).long()
                flat = flat[index.clamp_(max=flat.numel() - 1)]
            h.update(flat.to(device="cpu", dtype=torch.float32).numpy().tobytes())
    return h.hexdigest()[:12]


def encoder_identity(vae: torch.nn.Module, text_encoder: torch.nn.Module) -> str:
    """`<config digest>.<weights digest>` of a VAE and text encoder: the identity recorded in shard
    manifests, so shards of two checkpoints that share configs but not weights are told apart."""
    return f"{config_digest(vae.config, text_encoder.config)}.{weights_digest(vae, text_encoder)}"


class PipelineEncoder:
    """Videos through the pipeline's VAE, prompts through the pipeline's own `encode_prompt`.

    Videos (B, 3, F, H, W) in [-1, 1] → posterior mean and log-variance (B, C, F', H', W') in float32,
    not normalised. Prompts → (B, `max_length`, D) embeddings exactly as the pipeline conditions on them,
    and the number of real tokens (including ``</s>``) per prompt.
    """

    def __init__(
        self,
        *,
        name: str,
        pipeline: Any,
        max_length: int,
        clean_prompt: Callable[[str], str] = lambda s: s,
    ) -> None:
        self.name = name
        self.pipeline = pipeline
        self.max_length = max_length
        self._clean = clean_prompt

    @torch.no_grad()
    def encode_videos(self, videos: Tensor) -> LatentMoments:
        if videos.ndim != 5 or videos.shape[1] != 3:
            raise ValueError(
                f"{self.name}: videos must be (B, 3, F, H, W) in [-1, 1]; got {tuple(videos.shape)}"
            )
        vae = self.pipeline.vae
        param = next(vae.parameters())
        dist = vae.encode(videos.to(device=param.device, dtype=param.dtype)).latent_dist
        return LatentMoments(mean=dist.mean.float(), logvar=dist.logvar.float())

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> TextEmbeddings:
        prompts = list(prompts)
        if not prompts:
            raise ValueError(f"{self.name}: encode_prompts got no prompts")
        device = next(self.pipeline.text_encoder.parameters()).device
        embeds, _ = self.pipeline.encode_prompt(
            prompts,
            do_classifier_free_guidance=False,
            max_sequence_length=self.max_length,
            device=device,
        )
        mask = self.pipeline.tokenizer(
            [self._clean(p) for p in prompts],
            padding="max_length",
            max_length=self.max_length,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        ).attention_mask
        lengths = mask.gt(0).sum(dim=1).to(device=embeds.device, dtype=torch.int64)
        return TextEmbeddings(embeddings=embeds, lengths=lengths)
