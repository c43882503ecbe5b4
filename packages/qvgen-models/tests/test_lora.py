"""LoRA on the W4A4 deploy pipeline and the fake-quant student, through diffusers' own loader API (issue 35)."""

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from qvgen import quant
from qvgen.models import LoraKeyError, enable_lora_, get_family, load_pipeline, load_student, save_student

pytest.importorskip("peft")

from qvgen.models.lora_layer import QuantLoraLinear  # imports peft
from qvgen.quant.testing import randomize_kept_branches_

torch.set_num_threads(1)
KEPT_RANK = 4
REL_TOL_DEPLOY_VS_FAKE = 1e-4
"""Whole-transformer deploy vs fake-quant (test_export's multi-layer bound: an ulp may move a code downstream)."""
LORA_TARGETS = ("blocks.0.attn1.to_q", "blocks.0.attn2.to_k", "blocks.1.ffn.net.0.proj", "blocks.1.ffn.net.2")


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def quantized_wan(base: Path, cfg: quant.QuantConfig) -> torch.nn.Module:
    """The tiny Wan transformer, W4A4 fake-quant; with a kept branch its λ and factors are made non-trivial."""
    transformer = get_family("wan").load_transformer(base)
    quant.prepare_(transformer, cfg)
    quant.initialize_(transformer, progress=False)
    randomize_kept_branches_(transformer)
    return transformer.eval()


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(base, student, deploy) folders of one tiny W4A4 Wan with SVDQuant's kept branch."""
    root = tmp_path_factory.mktemp("lora")
    base = get_family("wan").save_tiny(root / "base")
    cfg = quant.QuantConfig.w4a4().model_copy(update={"kept_lowrank": quant.KeptLowRank(rank=KEPT_RANK)})
    student = quantized_wan(base, cfg)
    save_student(student, root / "student", family="wan", checkpoint=base, quant_config=cfg)
    quant.convert_(student)
    quant.save_quantized(student, root / "deploy", identity=str(base))
    return base, root / "student", root / "deploy"


def lora_state_dict(model: torch.nn.Module, seed: int, rank: int = 4, targets=LORA_TARGETS) -> dict:
    """A LoRA in diffusers' PEFT key format (``transformer.<module>.lora_A.weight`` ...) for ``targets``."""
    g = torch.Generator().manual_seed(seed)
    modules = dict(model.named_modules())
    sd = {}
    for name in targets:
        m = modules[name]
        sd[f"transformer.{name}.lora_A.weight"] = torch.randn(rank, m.in_features, generator=g) * 0.2
        sd[f"transformer.{name}.lora_B.weight"] = torch.randn(m.out_features, rank, generator=g) * 0.2
    return sd


def inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "hidden_states": torch.randn(1, 16, 3, 8, 8, generator=g),
        "timestep": torch.tensor([437.5]),
        "encoder_hidden_states": torch.randn(1, 16, 64, generator=g),
    }


def run(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs(), return_dict=False)[0]


def low_bit_types(model: torch.nn.Module) -> set[type]:
    return {type(m) for n, m in model.named_modules() if n in LORA_TARGETS}


def test_pipeline_lora_api_on_the_deploy_model(folders: tuple[Path, Path, Path]) -> None:
    base, _, deploy = folders
    pipe = load_pipeline(base, deploy, progress=False)
    t = pipe.transformer
    assert low_bit_types(t) == {quant.DeployLinear}  # nothing in the int4 forward until a LoRA is loaded
    bare = run(t)

    pipe.load_lora_weights(lora_state_dict(t, 1), adapter_name="style")
    assert low_bit_types(t) == {QuantLoraLinear}
    style = run(t)
    assert rel_err(style, bare) > 1e-3
    pipe.load_lora_weights(lora_state_dict(t, 2), adapter_name="motion")
    assert pipe.get_active_adapters() == ["motion"]  # diffusers: the last loaded adapter is the active one

    pipe.set_adapters(["style", "motion"], adapter_weights=[1.0, 0.0])
    assert torch.equal(run(t), style)
    pipe.set_adapters(["style", "motion"], adapter_weights=[0.0, 0.0])
    assert torch.equal(run(t), bare)  # weight 0 restores the LoRA-free output bit for bit
    pipe.set_adapters(["style", "motion"], adapter_weights=[0.7, 0.5])
    mixed = run(t)
    assert rel_err(mixed, style) > 1e-4

    pipe.disable_lora()
    assert torch.equal(run(t), bare)
    pipe.enable_lora()
    assert torch.equal(run(t), mixed)

    kept_before = {n: (m.base_layer.kept.down.clone(), m.base_layer.kept.up.clone()) for n, m in t.named_modules()
                   if isinstance(m, QuantLoraLinear)}  # fmt: skip
    codes_before = {n: m.base_layer.weight_packed.clone() for n, m in t.named_modules()
                    if isinstance(m, QuantLoraLinear)}  # fmt: skip
    pipe.fuse_lora(components=["transformer"], lora_scale=1.0)
    fused_layer = t.get_submodule(LORA_TARGETS[0])
    assert (
        fused_layer.merged and fused_layer.base_layer.kept.rank == KEPT_RANK + 2 * 4
    )  # both adapters appended
    assert rel_err(run(t), mixed) <= 1e-5
    for n, codes in codes_before.items():  # never into the int4 codes
        assert torch.equal(t.get_submodule(n).base_layer.weight_packed, codes)
    pipe.unfuse_lora(components=["transformer"])
    assert torch.equal(run(t), mixed)
    for n, (down, up) in kept_before.items():  # the kept branch is SVDQuant's again, bit for bit
        kept = t.get_submodule(n).base_layer.kept
        assert kept.rank == KEPT_RANK and torch.equal(kept.down, down) and torch.equal(kept.up, up)

    pipe.unload_lora_weights()
    assert low_bit_types(t) == {quant.DeployLinear}
    assert torch.equal(run(t), bare)  # unload restores the LoRA-free output bit for bit

    # a short sample through the stock pipeline with a LoRA on
    pipe.load_lora_weights(lora_state_dict(t, 1), adapter_name="style")
    out = pipe(prompt="a red ball", height=32, width=32, num_frames=5, num_inference_steps=2,
               max_sequence_length=16, generator=torch.Generator().manual_seed(0), output_type="np").frames  # fmt: skip
    assert np.isfinite(np.asarray(out)).all()


def test_deploy_and_student_agree_with_the_same_lora(folders: tuple[Path, Path, Path]) -> None:
    base, student_dir, deploy = folders
    student = load_student(student_dir)
    deployed = load_pipeline(base, deploy, progress=False).transformer
    bare_err = rel_err(run(deployed), run(student))
    assert bare_err <= REL_TOL_DEPLOY_VS_FAKE
    for model in (student, deployed):
        model.load_lora_adapter(lora_state_dict(model, 3), adapter_name="a")
    assert low_bit_types(student) == {QuantLoraLinear}
    assert rel_err(run(deployed), run(student)) <= REL_TOL_DEPLOY_VS_FAKE
    assert rel_err(run(student), run(load_student(student_dir))) > 1e-3  # the LoRA does something


def test_fuse_creates_and_removes_a_kept_branch_where_there_is_none(folders: tuple[Path, Path, Path]) -> None:
    base, _, _ = folders
    student = enable_lora_(quantized_wan(base, quant.QuantConfig.w4a4()))
    deployed = copy.deepcopy(student)
    quant.convert_(deployed)
    enable_lora_(deployed)
    bare = run(deployed)
    for model in (student, deployed):
        model.load_lora_adapter(lora_state_dict(model, 4), adapter_name="a")
        model.set_adapters(["a"], [0.5])
    unfused = run(deployed)
    assert rel_err(unfused, run(student)) <= REL_TOL_DEPLOY_VS_FAKE
    deployed.fuse_lora()
    assert deployed.get_submodule(LORA_TARGETS[0]).base_layer.kept is not None
    assert rel_err(run(deployed), unfused) <= 1e-5
    deployed.unfuse_lora()
    assert deployed.get_submodule(LORA_TARGETS[0]).base_layer.kept is None
    deployed.fuse_lora()
    deployed.unload_lora()  # diffusers: unloading after fusing keeps the fused result
    assert low_bit_types(deployed) == {quant.DeployLinear}
    assert rel_err(run(deployed), unfused) <= 1e-5 and rel_err(run(deployed), bare) > 1e-4


def test_lora_keys_matching_no_layer_are_an_error_naming_them(folders: tuple[Path, Path, Path]) -> None:
    base, _, deploy = folders
    pipe = load_pipeline(base, deploy, progress=False)
    t = pipe.transformer
    good = lora_state_dict(t, 1)
    pipe.load_lora_weights(good, adapter_name="first")
    bad = {**lora_state_dict(t, 2), "transformer.blocks.7.attn1.to_q.lora_A.weight": torch.zeros(4, 128)}
    with pytest.raises(
        LoraKeyError, match=r"1 of 9 keys match no layer: blocks\.7\.attn1\.to_q\.lora_A\.weight"
    ):
        pipe.load_lora_weights(bad, adapter_name="second")
    alien = {"transformer.not_a_layer.lora_A.weight": torch.zeros(4, 128),
             "transformer.not_a_layer.lora_B.weight": torch.zeros(128, 4)}  # fmt: skip
    with pytest.raises(LoraKeyError, match=r"2 of 2 keys match no layer: not_a_layer\.lora_A\.weight"):
        pipe.load_lora_weights(alien, adapter_name="third")
    # nothing was half-loaded: the refused names are free and the first adapter still works
    assert set(t.peft_config) == {"first"}
    pipe.load_lora_weights(lora_state_dict(t, 2), adapter_name="second")
    assert set(t.peft_config) == {"first", "second"}


def test_cogvideox_pipeline_takes_and_unloads_a_lora(tmp_path: Path) -> None:
    base = get_family("cogvideox").save_tiny(tmp_path / "base")
    transformer = get_family("cogvideox").load_transformer(base)
    quant.prepare_(transformer, quant.QuantConfig.w4a4())
    quant.initialize_(transformer, progress=False)
    quant.convert_(transformer)
    quant.save_quantized(transformer, tmp_path / "deploy", identity=str(base))
    pipe = load_pipeline(base, tmp_path / "deploy", progress=False)
    t = pipe.transformer
    g = torch.Generator().manual_seed(0)
    x, text = torch.randn(1, 3, 16, 8, 8, generator=g), torch.randn(1, 16, 64, generator=g)

    def cog_run() -> torch.Tensor:
        with torch.no_grad():
            return t(x, text, torch.tensor([500]), return_dict=False)[0]

    bare = cog_run()
    targets = ("transformer_blocks.0.attn1.to_q", "transformer_blocks.1.ff.net.2")
    pipe.load_lora_weights(lora_state_dict(t, 5, targets=targets), adapter_name="a")
    assert {type(t.get_submodule(n)) for n in targets} == {QuantLoraLinear}
    assert rel_err(cog_run(), bare) > 1e-4
    pipe.set_adapters(["a"], adapter_weights=[0.0])
    assert torch.equal(cog_run(), bare)
    pipe.unload_lora_weights()
    assert {type(t.get_submodule(n)) for n in targets} == {quant.DeployLinear}
    assert torch.equal(cog_run(), bare)


def test_original_wan_format_lora_loads_as_its_diffusers_twin(folders: tuple[Path, Path, Path]) -> None:
    """diffusers converts the original Wan key format (``diffusion_model.blocks.0.self_attn.q``) before our layers see it."""
    base, _, deploy = folders
    pipe = load_pipeline(base, deploy, progress=False)
    t = pipe.transformer
    diffusers_sd = lora_state_dict(t, 6, targets=("blocks.0.attn1.to_q", "blocks.1.attn2.to_k"))
    rename = {"blocks.0.attn1.to_q": "blocks.0.self_attn.q", "blocks.1.attn2.to_k": "blocks.1.cross_attn.k"}
    original_sd = {}
    for key, value in diffusers_sd.items():
        module = next(m for m in rename if f".{m}." in key)
        original_sd[key.replace(f"transformer.{module}", f"diffusion_model.{rename[module]}")] = value
    pipe.load_lora_weights(diffusers_sd, adapter_name="diffusers")
    expected = run(t)
    pipe.unload_lora_weights()
    pipe.load_lora_weights(original_sd, adapter_name="original")
    assert torch.equal(run(t), expected)


def test_a_lora_bias_runs_unfused_and_is_refused_on_fuse(folders: tuple[Path, Path, Path]) -> None:
    base, _, deploy = folders
    t = load_pipeline(base, deploy, progress=False).transformer
    bare = run(t)
    sd = lora_state_dict(t, 8, targets=LORA_TARGETS[:1])
    sd[f"transformer.{LORA_TARGETS[0]}.lora_B.bias"] = torch.full(
        (t.get_submodule(LORA_TARGETS[0]).out_features,), 0.1
    )
    t.load_lora_adapter(sd, adapter_name="biased")
    assert rel_err(run(t), bare) > 1e-4
    with pytest.raises(ValueError, match=r"adapter 'biased' has a LoRA bias.*use it unfused"):
        t.fuse_lora()
    assert not t.get_submodule(LORA_TARGETS[0]).merged
