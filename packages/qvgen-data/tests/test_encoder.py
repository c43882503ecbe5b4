import pytest
import torch

from qvgen.data import LatentMoments, TextEmbeddings, VideoEncoder
from qvgen.data.testing import FakeEncoder


def test_latent_moments_rejects_logvar_of_another_shape() -> None:
    with pytest.raises(ValueError, match="logvar shape"):
        LatentMoments(mean=torch.zeros(1, 4, 2, 2, 2), logvar=torch.zeros(1, 4, 2, 2, 3))


def test_latent_moments_rejects_non_5d_mean() -> None:
    with pytest.raises(ValueError, match=r"\(B, C, F, H, W\)"):
        LatentMoments(mean=torch.zeros(4, 2, 2, 2), logvar=None)


def test_text_embeddings_rejects_lengths_that_are_not_int64_per_prompt() -> None:
    with pytest.raises(ValueError, match="int64"):
        TextEmbeddings(embeddings=torch.zeros(2, 5, 3), lengths=torch.tensor([1, 2], dtype=torch.int32))
    with pytest.raises(ValueError, match="int64"):
        TextEmbeddings(embeddings=torch.zeros(2, 5, 3), lengths=torch.tensor([1]))


def test_fake_encoder_is_a_video_encoder_with_wan_like_compression() -> None:
    enc = FakeEncoder()
    assert isinstance(enc, VideoEncoder)
    moments = enc.encode_videos(torch.rand(2, 3, 9, 32, 48) * 2 - 1)
    assert moments.mean.shape == (2, 16, 3, 4, 6)
    assert moments.logvar is not None and moments.logvar.shape == moments.mean.shape


def test_fake_encoder_is_deterministic_and_depends_on_its_input() -> None:
    video = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    a, b = FakeEncoder().encode_videos(video), FakeEncoder().encode_videos(video)
    assert torch.equal(a.mean, b.mean)
    assert not torch.equal(a.mean, FakeEncoder().encode_videos(-video).mean)


def test_fake_encoder_embeds_words_and_counts_them() -> None:
    text = FakeEncoder(max_length=4, text_dim=8).encode_prompts(["a red square moves left", "a red circle"])
    assert text.embeddings.shape == (2, 4, 8)
    assert text.lengths.tolist() == [4, 3]
    assert torch.equal(text.embeddings[0, :2], text.embeddings[1, :2])  # same words, same vectors
    assert not torch.equal(text.embeddings[0, 2], text.embeddings[1, 2])
    assert torch.count_nonzero(text.embeddings[1, 3]) == 0  # padding is zero
