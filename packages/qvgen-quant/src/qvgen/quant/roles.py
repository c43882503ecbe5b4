"""Layer roles: how a model family names the job of each Linear, in quant's terms."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from enum import StrEnum


class LayerRole(StrEnum):
    """The job of one `nn.Linear` inside a video DiT (families map module-name globs to these)."""

    attn_q = "attn_q"
    attn_k = "attn_k"
    attn_v = "attn_v"
    attn_qkv = "attn_qkv"
    attn_out = "attn_out"
    cross_q = "cross_q"
    cross_k = "cross_k"
    cross_v = "cross_v"
    cross_kv = "cross_kv"
    cross_out = "cross_out"
    ffn_up = "ffn_up"
    ffn_down = "ffn_down"
    time_embed = "time_embed"
    modulation = "modulation"
    text_proj = "text_proj"
    proj_out = "proj_out"
    patch_embed = "patch_embed"
    """The input patch projection when it is a Linear (CogVideoX 1.5's temporal patches)."""
    image_k = "image_k"
    """Key projection of the image tokens in an image-to-video cross-attention (Wan I2V `add_k_proj`)."""
    image_v = "image_v"
    """Value projection of the image tokens (Wan I2V `add_v_proj`)."""
    image_kv = "image_kv"
    """The two above fused (diffusers' `fuse_projections`: `to_added_kv`)."""
    image_proj = "image_proj"
    """The MLP that maps image-encoder features to the model width (Wan I2V `image_embedder`)."""
    other = "other"


NON_LATENT_INPUT_ROLES: frozenset[LayerRole] = frozenset(
    {
        LayerRole.cross_k,
        LayerRole.cross_v,
        LayerRole.cross_kv,
        LayerRole.image_k,
        LayerRole.image_v,
        LayerRole.image_kv,
        LayerRole.image_proj,
        LayerRole.text_proj,
    }
)
"""Roles whose Linear reads text or image tokens, not the latent token sequence: under per-token
timesteps `[B, S]` their activations take each sample's clip group, never a token's."""


def matches_any(name: str, globs: Iterable[str]) -> bool:
    """Whether a module name matches any fnmatch glob (case-sensitive)."""
    return any(fnmatch.fnmatchcase(name, g) for g in globs)


def resolve_role(name: str, layer_roles: Mapping[str, LayerRole]) -> LayerRole:
    """The role of the first glob in `layer_roles` (insertion order) matching `name`; `other` if none."""
    for glob, role in layer_roles.items():
        if fnmatch.fnmatchcase(name, glob):
            return LayerRole(role)
    return LayerRole.other
