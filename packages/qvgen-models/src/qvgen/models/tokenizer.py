"""A T5/UMT5-style Unigram tokenizer built fully offline, for the tiny test models.

The real Wan (UMT5) and CogVideoX (T5 v1.1) tokenizers are `transformers.T5Tokenizer` sentencepiece Unigram
models that differ only in vocabulary. We train a small Unigram vocabulary in process with the
`sentencepiece` trainer (``num_threads=1`` makes it byte-for-byte deterministic) and hand it to
`T5Tokenizer(vocab=...)`. Nothing is downloaded and no protobuf is needed.
"""

from __future__ import annotations

import io
import random

from transformers import T5Tokenizer

_WORDS = [
    "a",
    "an",
    "the",
    "cat",
    "dog",
    "panda",
    "horse",
    "monkey",
    "astronaut",
    "robot",
    "car",
    "bird",
    "fish",
    "dragon",
    "girl",
    "boy",
    "man",
    "woman",
    "city",
    "forest",
    "beach",
    "ocean",
    "mountain",
    "river",
    "moon",
    "sky",
    "cloud",
    "sunset",
    "sunrise",
    "night",
    "street",
    "road",
    "bar",
    "kitchen",
    "garden",
    "field",
    "snow",
    "rain",
    "fire",
    "light",
    "playing",
    "dancing",
    "riding",
    "eating",
    "running",
    "flying",
    "swimming",
    "walking",
    "driving",
    "jumping",
    "cooking",
    "painting",
    "singing",
    "red",
    "blue",
    "green",
    "yellow",
    "black",
    "white",
    "golden",
    "silver",
    "bright",
    "dark",
    "cinematic",
    "realistic",
    "blurry",
    "detailed",
    "slow",
    "motion",
    "timelapse",
    "closeup",
    "aerial",
    "view",
    "of",
    "on",
    "in",
    "at",
    "with",
    "and",
    "over",
    "under",
    "through",
    "4k",
    "hd",
    "low",
    "high",
    "quality",
    "style",
    "video",
    "camera",
    "bright",
    "tones",
    "overexposed",
    "static",
    "blurred",
    "details",
    "subtitles",
    "worst",
    "jpeg",
    "compression",
    "ugly",
    "incomplete",
    "extra",
    "fingers",
    "deformed",
    "square",
    "circle",
    "triangle",
    "moves",
    "left",
    "right",
    "up",
    "down",
    "background",
]


def _corpus(n_lines: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(3, 14))]
        if rng.random() < 0.3:
            words[0] = words[0].capitalize()
        lines.append(" ".join(words) + rng.choice(["", ".", ",", "!", "?"]))
    # Every printable ASCII character appears, so none maps to <unk> needlessly.
    lines.append(" ".join(chr(c) for c in range(33, 127)))
    return lines


def train_t5_vocab(vocab_size: int = 1000, seed: int = 0) -> list[tuple[str, float]]:
    """A Unigram vocabulary ``[(piece, log_prob)]`` in T5's id layout: ``<pad>=0, </s>=1, <unk>=2``."""
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus(3000, seed)),
        model_writer=buf,
        vocab_size=vocab_size,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        character_coverage=1.0,
        hard_vocab_limit=False,
        num_threads=1,
        minloglevel=2,
    )
    sp = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    vocab = [(sp.id_to_piece(i), float(sp.get_score(i))) for i in range(sp.get_piece_size())]
    if [piece for piece, _ in vocab[:3]] != ["<pad>", "</s>", "<unk>"]:
        raise RuntimeError(f"sentencepiece returned an unexpected special-token layout: {vocab[:3]}")
    return vocab


def make_t5_tokenizer(model_max_length: int, seed: int = 0) -> T5Tokenizer:
    """`T5Tokenizer` from an in-process vocabulary: pad=0, eos=1, unk=2, plus 100 ``<extra_id_N>``."""
    return T5Tokenizer(vocab=train_t5_vocab(seed=seed), extra_ids=100, model_max_length=model_max_length)
