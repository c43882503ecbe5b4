"""Contract tests run for every registered family: save → load → train step → 2-step sample."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from qvgen.models import FAMILIES, Components, load_components
from qvgen.models.testing import tiny_spec


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def loaded(request):
    name = request.param
    spec = tiny_spec(name)
    return name, FAMILIES[name], spec, load_components(spec)


def test_save_load_round_trip_is_bit_identical(loaded):
    _, fam, _, comps = loaded
    fresh = fam.build_tiny_components(seed=0)
    for part in ("transformer", "vae", "text_encoder"):
        want, got = getattr(fresh, part).state_dict(), getattr(comps, part).state_dict()
        assert want.keys() == got.keys(), part
        assert all(torch.equal(want[k], got[k]) for k in want), part
    assert type(comps.scheduler) is type(fresh.scheduler)
    prompt = "a red square moves left"
    assert comps.tokenizer(prompt).input_ids == fresh.tokenizer(prompt).input_ids


def test_tiny_builds_are_deterministic_per_seed(loaded):
    _, fam, _, _ = loaded
    a, b, c = (fam.build_tiny_components(seed=s).transformer.state_dict() for s in (1, 1, 2))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_load_transformer_from_pipeline_folder_or_its_subfolder(loaded):
    _, fam, spec, comps = loaded
    whole = fam.load_transformer(spec.checkpoint, "float32").state_dict()
    sub = fam.load_transformer(spec.checkpoint / "transformer", "float32").state_dict()
    ref = comps.transformer.state_dict()
    assert all(torch.equal(ref[k], whole[k]) and torch.equal(ref[k], sub[k]) for k in ref)


def test_one_training_step_reaches_every_transformer_parameter(loaded):
    _, fam, spec, comps = loaded
    enc = fam.encoder(comps, spec)
    videos = torch.rand(2, 3, 9, 64, 64) * 2 - 1
    z = enc.encode_videos(videos).mean
    text = enc.encode_prompts(["a cat playing piano", "a blue circle moves up"])
    x0 = fam.normalize_latents(z, comps.vae.config)
    gen = torch.Generator().manual_seed(0)
    x = fam.noised_inputs(x0, torch.randn(x0.shape, generator=gen), fam.sample_timesteps(2, gen, spec))
    model = fam.build_tiny_components(seed=3).transformer.train()
    out = fam.predict(model, x, text.embeddings, text.lengths)
    assert out.shape == x.target.shape == x0.shape
    loss = F.mse_loss(out, x.target)
    loss.backward()
    assert torch.isfinite(loss)
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []


def test_two_step_sample_through_the_pipeline(loaded):
    _, fam, spec, comps = loaded
    pipe = fam.pipeline(comps, spec)
    kwargs = fam.sample_kwargs(comps, height=64, width=64, num_frames=9, num_inference_steps=2)
    frames = pipe(
        prompt="a cat playing piano",
        negative_prompt="blurry",
        generator=torch.Generator().manual_seed(0),
        output_type="np",
        **kwargs,
    ).frames
    assert frames.shape == (1, 9, 64, 64, 3)
    assert np.isfinite(frames).all() and frames.min() >= 0 and frames.max() <= 1
    again = pipe(
        prompt="a cat playing piano",
        negative_prompt="blurry",
        generator=torch.Generator().manual_seed(0),
        output_type="np",
        **kwargs,
    ).frames
    np.testing.assert_array_equal(frames, again)


def test_latent_normalisation_round_trips(loaded):
    _, fam, _, comps = loaded
    z = torch.randn(2, 16, 3, 8, 8)
    x = fam.normalize_latents(z, comps.vae.config)
    torch.testing.assert_close(fam.denormalize_latents(x, comps.vae.config), z)
    torch.testing.assert_close(fam.denormalize_latents(fam.normalize_latents(z)), z)


def test_loading_in_bfloat16_casts_transformer_and_text_encoder(loaded):
    name, fam, spec, _ = loaded
    comps: Components = fam.load(spec.checkpoint, "bfloat16")
    block = "blocks" if name == "wan" else "transformer_blocks"  # (Wan keeps its norms/tables in fp32)
    assert comps.transformer.get_submodule(f"{block}.0.attn1.to_q").weight.dtype is torch.bfloat16
    assert next(comps.text_encoder.parameters()).dtype is torch.bfloat16
    vae_dtype = torch.float32 if name == "wan" else torch.bfloat16
    assert next(comps.vae.parameters()).dtype is vae_dtype


def test_spec_of_the_other_family_is_refused(loaded):
    name, fam, _, comps = loaded
    other = tiny_spec("cogvideox" if name == "wan" else "wan")
    with pytest.raises(TypeError, match="needs a"):
        fam.sample_timesteps(2, None, other)
    with pytest.raises(TypeError, match="needs a"):
        fam.encoder(comps, other)


def test_family_facts_match_the_name_type_and_the_schedulers(loaded):
    from typing import get_args

    from qvgen.models import FamilyName

    name, family, spec, components = loaded
    assert family.name == name and set(FAMILIES) == set(get_args(FamilyName))
    assert family.num_train_timesteps == components.scheduler.config.num_train_timesteps
    assert family.default_fps > 0
    t = family.sample_timesteps(4096, torch.Generator().manual_seed(0), spec)
    assert float(t.min()) >= 0 and float(t.max()) <= family.num_train_timesteps


def test_student_manifest_records_the_timestep_range_and_the_loader_prepares_with_it(loaded, tmp_path):
    from qvgen import quant
    from qvgen.models import load_student, read_student_manifest, save_student
    from qvgen.models.testing import tiny_checkpoint

    name, family, _, _ = loaded
    student = family.load_transformer(tiny_checkpoint(name))
    cfg = quant.QuantConfig(weight=quant.MinMaxWeight(bits=4))
    quant.prepare_(student, cfg, layer_roles=family.layer_roles, num_train_timesteps=500)
    quant.initialize_(student, progress=False)
    out = save_student(
        student, tmp_path / "s", family=name, checkpoint=tiny_checkpoint(name), quant_config=cfg
    )
    assert read_student_manifest(out).num_train_timesteps == 500
    context = quant.timestep_context(load_student(out))
    assert context is not None and context.num_train_timesteps == 500
