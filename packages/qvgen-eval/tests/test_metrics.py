import numpy as np
import pytest
import torch

from qvgen.eval import (
    TransformerCall,
    latent_mse,
    motion_energy,
    motion_energy_ratio,
    psnr,
    record_transformer_calls,
    ssim,
    step_errors,
    temporal_flickering,
)


def _const_frames(values: list[int], h: int = 4, w: int = 5) -> np.ndarray:
    return np.stack([np.full((h, w, 3), v, dtype=np.uint8) for v in values])


def test_temporal_flickering_is_255_minus_mean_consecutive_abs_difference_over_255():
    frames = _const_frames([0, 10, 40])  # pair differences 10 and 30 -> mean 20
    assert temporal_flickering(frames) == pytest.approx((255 - 20) / 255, abs=1e-12)


def test_temporal_flickering_averages_pairs_then_maps_and_a_still_video_scores_one():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(6, 8, 8, 3), dtype=np.uint8)
    diffs = [np.abs(frames[i + 1].astype(float) - frames[i].astype(float)).mean() for i in range(5)]
    assert temporal_flickering(frames) == pytest.approx((255 - np.mean(diffs)) / 255, abs=1e-12)
    assert temporal_flickering(np.repeat(frames[:1], 4, axis=0)) == 1.0


def test_temporal_flickering_rejects_float_frames_and_single_frames():
    with pytest.raises(ValueError, match="uint8"):
        temporal_flickering(np.zeros((3, 4, 4, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="F >= 2"):
        temporal_flickering(np.zeros((1, 4, 4, 3), dtype=np.uint8))


def test_motion_energy_ratio_flags_frozen_and_noisy_videos():
    rng = np.random.default_rng(1)
    teacher = np.cumsum(rng.normal(0, 0.02, size=(8, 16, 16, 3)), axis=0) + 0.5
    frozen = np.repeat(teacher[:1], 8, axis=0)
    noisy = teacher + rng.normal(0, 0.2, size=teacher.shape)
    assert motion_energy(frozen) == 0.0
    assert motion_energy_ratio(teacher, teacher) == pytest.approx(1.0)
    assert motion_energy_ratio(frozen, teacher) == 0.0
    assert motion_energy_ratio(noisy, teacher) > 5.0


def test_psnr_matches_its_definition_and_is_capped_for_identical_frames():
    a = np.full((2, 16, 16, 3), 0.5)
    b = a + 0.1
    assert psnr(b, a) == pytest.approx(10 * np.log10(1 / 0.01))
    assert psnr(a, a) == 100.0
    u8 = (a * 255).astype(np.uint8)
    assert psnr(u8, u8) == 100.0


def test_ssim_is_one_for_identical_frames_symmetric_and_drops_with_noise():
    rng = np.random.default_rng(2)
    x = rng.random((3, 24, 24, 3))
    y = np.clip(x + rng.normal(0, 0.1, x.shape), 0, 1)
    z = np.clip(x + rng.normal(0, 0.3, x.shape), 0, 1)
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-12)
    assert ssim(x, y) == pytest.approx(ssim(y, x), abs=1e-12)
    assert 1.0 > ssim(x, y) > ssim(x, z)


def test_ssim_of_constant_images_follows_the_luminance_formula():
    # Constant frames: variances and covariance are 0, so SSIM = (2ab + C1) / (a² + b² + C1).
    a, b, c1 = 0.3, 0.6, 0.01**2
    x, y = np.full((1, 16, 16, 3), a), np.full((1, 16, 16, 3), b)
    assert ssim(x, y) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), abs=1e-12)


def test_fidelity_metrics_refuse_videos_of_different_shapes():
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(np.zeros((2, 16, 16, 3)), np.zeros((3, 16, 16, 3)))
    with pytest.raises(ValueError, match="smaller than the SSIM window"):
        ssim(np.zeros((2, 8, 8, 3)), np.zeros((2, 8, 8, 3)))
    with pytest.raises(ValueError, match="latents differ"):
        latent_mse(torch.zeros(1, 2), torch.zeros(1, 3))


def _call(t: float, out: torch.Tensor, batch: int = 1) -> TransformerCall:
    return TransformerCall(torch.full((batch,), t, dtype=torch.float64), out)


def test_step_errors_group_the_two_cfg_calls_of_a_step():
    ones = torch.ones(2, 3)
    teacher = [_call(900, ones), _call(900, ones), _call(500, ones), _call(500, ones)]
    student = [_call(900, ones), _call(900, ones * 3), _call(500, ones * 2), _call(500, ones * 2)]
    errs = step_errors(student, teacher)
    assert [e.step for e in errs] == [0, 1]
    assert [e.timestep for e in errs] == [900.0, 500.0]
    assert errs[0].mse == pytest.approx(4 * 6 / 12) and errs[0].relative_mse == pytest.approx(24 / 12)
    assert errs[1].mse == pytest.approx(1.0) and errs[1].relative_mse == pytest.approx(1.0)


def test_step_errors_refuse_trajectories_that_do_not_line_up():
    a = [_call(900, torch.ones(2))]
    with pytest.raises(ValueError, match="made 2 transformer calls, teacher 1"):
        step_errors(a + a, a)
    with pytest.raises(ValueError, match="timestep"):
        step_errors([_call(800, torch.ones(2))], a)


def test_record_transformer_calls_keeps_timestep_and_output_and_removes_its_hook():
    class Denoiser(torch.nn.Module):
        def forward(self, hidden_states, timestep, return_dict=True):
            return (hidden_states * 2,)

    model = Denoiser()
    with record_transformer_calls(model) as calls:
        model(hidden_states=torch.ones(1, 2), timestep=torch.tensor([7]), return_dict=False)
    model(hidden_states=torch.ones(1, 2), timestep=torch.tensor([8]))
    assert len(calls) == 1
    assert calls[0].timestep.tolist() == [7.0]
    assert torch.equal(calls[0].output, torch.full((1, 2), 2.0))
    with pytest.raises(RuntimeError, match="timestep"), record_transformer_calls(model):
        model(torch.ones(1, 2), torch.tensor([1]))
