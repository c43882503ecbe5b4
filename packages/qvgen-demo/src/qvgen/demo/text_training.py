"""Phase 1b of the teacher's training: teach the tiny UMT5 which clause of a caption says what.

A real Wan reads prompts with a pretrained UMT5 that knows word order. The tiny teacher's UMT5 starts
random, and a random encoder blurs "a red bar … and a blue circle …" into "a blue bar … and a red
circle …": the transformer then cannot bind a colour to its lane. This phase stands in for pretraining.
Six learned queries, one per (clause, attribute), read the encoder's output by single-head attention
(as the transformer's cross-attention reads it: padding zeroed, no text positions) and classify the
colour, shape and direction of clause 1 and of clause 2 ("none" for a one-object caption). The encoder
and the readers train together on random captions of the world's grammar; only the encoder is kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from qvgen.data import COLOURS, DIRECTIONS, SHAPE_SETS, CaptionClause, ShapeName
from qvgen.demo.teacher_config import TeacherConfig
from qvgen.models import Components

CLAUSES = 2
"""Clauses per caption the readers ask about (the world draws at most two objects)."""
WARMUP_STEPS = 50
"""Linear learning-rate warm-up of the encoder and readers (then constant)."""


def caption_batch(gen: torch.Generator, n: int, shapes: Sequence[ShapeName]) -> tuple[list[str], Tensor]:
    """`n` random captions of the world's grammar (half of them two-object, colours distinct) and their
    labels (n, CLAUSES, 3): colour, shape and direction index per clause, -1 past the last clause."""
    colours, directions = list(COLOURS), list(DIRECTIONS)
    labels = torch.full((n, CLAUSES, 3), -1, dtype=torch.long)
    captions = []
    for i in range(n):
        count = 1 + int(torch.randint(0, CLAUSES, (1,), generator=gen))
        picked = torch.randperm(len(colours), generator=gen)[:count].tolist()
        clauses = []
        for k, c in enumerate(picked):
            s = int(torch.randint(0, len(shapes), (1,), generator=gen))
            d = int(torch.randint(0, len(directions), (1,), generator=gen))
            labels[i, k] = torch.tensor([c, s, d])
            clauses.append(CaptionClause(colours[c], shapes[s], directions[d]).phrase)
        captions.append(" and ".join(clauses))
    return captions, labels


class ClauseReaders(nn.Module):
    """One attention query per (clause, attribute) over the text tokens, then a linear classifier."""

    def __init__(self, dim: int, classes: tuple[int, int, int]) -> None:
        super().__init__()
        self.classes = classes
        self.queries = nn.Parameter(torch.randn(CLAUSES * 3, dim) / dim**0.5)
        self.keys = nn.Linear(dim, dim)
        # class 0 is "no such clause"; the attribute's values follow
        self.heads = nn.ModuleList(nn.Linear(dim, 1 + n) for _ in range(CLAUSES) for n in classes)

    def forward(self, text: Tensor, mask: Tensor) -> list[Tensor]:
        """text (B, L, D), mask (B, L) → logits of each (clause, attribute), clause-major."""
        scores = torch.einsum("bld,qd->bql", self.keys(text), self.queries) / text.shape[-1] ** 0.5
        weights = scores.masked_fill(~mask[:, None, :], float("-inf")).softmax(-1)
        read = torch.einsum("bql,bld->bqd", weights, text)
        return [head(read[:, q]) for q, head in enumerate(self.heads)]


def _encode(components: Components, captions: list[str], length: int) -> tuple[Tensor, Tensor]:
    """Encoder output with padding zeroed (what `WanPipeline.encode_prompt` hands the transformer), with
    gradients (qvgen.models' `PipelineEncoder.encode_prompts` runs without them)."""
    tokens = components.tokenizer(
        captions, padding="max_length", max_length=length, truncation=True, add_special_tokens=True,
        return_attention_mask=True, return_tensors="pt",
    )  # fmt: skip
    mask = tokens.attention_mask.bool()
    encoder: Any = components.text_encoder
    out = encoder(tokens.input_ids, tokens.attention_mask).last_hidden_state
    return out * mask[..., None], mask


def _loss_and_accuracy(logits: list[Tensor], labels: Tensor) -> tuple[Tensor, Tensor]:
    targets = (labels + 1).reshape(labels.shape[0], -1)  # -1 (none) → class 0
    losses = [F.cross_entropy(lg, targets[:, q]) for q, lg in enumerate(logits)]
    correct = [(lg.argmax(-1) == targets[:, q]).float().mean() for q, lg in enumerate(logits)]
    return torch.stack(losses).mean(), torch.stack(correct)


def read_accuracy(
    components: Components, readers: ClauseReaders, shapes: Sequence[ShapeName], length: int, seed: int,
    n: int = 512,
) -> dict[str, float]:  # fmt: skip
    """Accuracy of the readers on `n` fresh captions: per attribute of clause 2, and over everything."""
    gen = torch.Generator().manual_seed(seed)
    captions, labels = caption_batch(gen, n, shapes)
    with torch.no_grad():
        text, mask = _encode(components, captions, length)
        _, correct = _loss_and_accuracy(readers(text, mask), labels)
    second = correct.reshape(CLAUSES, 3)[1]
    return {
        "all": round(float(correct.mean()), 4),
        **{f"clause2_{a}": round(float(v), 4) for a, v in zip(("colour", "shape", "direction"), second)},
    }


def train_text_encoder(
    components: Components, cfg: TeacherConfig, stop: Callable[[], bool] = lambda: False,
    progress: bool = True, *, train_encoder: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """`cfg.text_steps` steps of clause reading; the encoder in `components` is updated in place.

    With `train_encoder=False` only the readers learn (a probe of what the encoder already tells apart).
    Returns a log: steps, seconds, final loss and the readers' accuracy on fresh captions."""
    started = time.monotonic()
    shapes = SHAPE_SETS[cfg.shapes]
    encoder: Any = components.text_encoder
    torch.manual_seed(cfg.seed + 7)
    readers = ClauseReaders(encoder.config.d_model, (len(COLOURS), len(shapes), len(DIRECTIONS)))
    params = list(readers.parameters()) + (list(encoder.parameters()) if train_encoder else [])
    encoder.requires_grad_(train_encoder).train(train_encoder)
    opt = torch.optim.AdamW(params, lr=cfg.text_lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(cfg.seed + 5)
    loss = torch.zeros(())
    steps = 0
    for step in tqdm(range(cfg.text_steps), desc="text encoder", unit="step", disable=not progress):
        if stop():
            break
        for group in opt.param_groups:
            group["lr"] = cfg.text_lr * min(1.0, (step + 1) / WARMUP_STEPS)
        captions, labels = caption_batch(gen, cfg.text_batch_size, shapes)
        text, mask = _encode(components, captions, cfg.text_length)
        loss, _ = _loss_and_accuracy(readers(text, mask), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1
    encoder.requires_grad_(False).eval()
    accuracy = read_accuracy(components, readers, shapes, cfg.text_length, cfg.seed + 6)
    return {
        "steps": steps,
        "trained_encoder": train_encoder,
        "final_loss": round(float(loss.detach()), 4),
        "accuracy": accuracy,
        "seconds": round(time.monotonic() - started, 1),
    }
