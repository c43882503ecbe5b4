"""`qvgen-train import-reference`: the reference implementation's checkpoint → a qvgen student manifest."""

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from qvgen import quant
from qvgen.models import get_family, load_student, read_student_manifest
from qvgen.models.testing import tiny_checkpoint
from qvgen.train.cli import main
from qvgen.train.reference import REF_TENSORS, ReferenceImportError, counter_table, import_reference
from qvgen.train.testing import write_reference_checkpoint


def reference_layer(x, w, b, s, z, lower, upper, g, bits=4):
    """The reference QuantLinear forward (LSQ+ weight, twice-clipped dynamic per-token activation), float64."""
    qmax = 2**bits - 1
    wq = s * (torch.clamp(torch.round(w / s + z), 0, qmax) - z)
    lo = torch.sigmoid(lower[g]) * (x.amin(-1, keepdim=True) * 0.95)
    hi = torch.sigmoid(upper[g]) * (x.amax(-1, keepdim=True) * 0.95)
    sc = ((hi - lo) / qmax).clamp_min(1e-9)
    zp = (-torch.round(lo / sc)).clamp(0, qmax)
    xq = sc * (torch.clamp(torch.round(x / sc) + zp, 0, qmax) - zp)
    return F.linear(xq, wq, b)


@pytest.fixture(scope="module")
def wan_reference(tmp_path_factory):
    base = tiny_checkpoint("wan")
    transformer = get_family("wan").load_transformer(base, dtype="float32")
    folder = write_reference_checkpoint(transformer, tmp_path_factory.mktemp("ref") / "transformer", seed=1)
    return base, folder


def _copy(folder, tmp_path, edit):
    tensors = load_file(str(folder / REF_TENSORS))
    edit(tensors)
    out = tmp_path / "bad"
    out.mkdir()
    save_file(tensors, str(out / REF_TENSORS))
    (out / "config.json").write_text((folder / "config.json").read_text())
    return out


def test_imported_layers_compute_exactly_what_the_reference_computes(wan_reference, tmp_path):
    base, folder = wan_reference
    out = import_reference(folder, base, tmp_path / "student")
    manifest = read_student_manifest(out)
    assert manifest.quant.activation.groups == 50 and manifest.quant.activation.group_mode == "mod"
    assert manifest.run_config["group_mapping"] == "mod"
    student = load_student(out).double()
    ref = load_file(str(folder / REF_TENSORS))
    layers = quant.quantized_layers(student)
    assert len(layers) == 26  # every Linear of the tiny Wan, as the reference's replace_linear
    g = torch.Generator().manual_seed(0)
    for t in (999.0, 437.0, 3.0):
        quant.set_timesteps_(student, torch.tensor([t]))
        for name in ("blocks.0.attn1.to_q", "blocks.1.ffn.net.2", "proj_out"):
            layer = layers[name]
            x = torch.randn(1, 12, layer.in_features, generator=g, dtype=torch.float64)
            r = {k[len(name) + 1 :]: v.double() for k, v in ref.items() if k.startswith(name + ".")}
            expected = reference_layer(
                x, r["w"], r["b"], r["wquantizer.scale"], r["wquantizer.zero_point"],
                r["aquantizer.lower"], r["aquantizer.upper"], int(t) % 50,
            )  # fmt: skip
            with torch.no_grad():
                torch.testing.assert_close(layer(x), expected, rtol=1e-6, atol=1e-6, msg=f"{name} t={t}")


def test_imported_student_samples_and_exports_to_deploy(wan_reference, tmp_path):
    base, folder = wan_reference
    out = import_reference(folder, base, tmp_path / "student")
    fam = get_family("wan")
    student = load_student(out)
    components = dataclasses.replace(fam.load(base), transformer=student)
    kwargs = fam.sample_kwargs(
        components, prompt="a red square", height=32, width=32, num_frames=5, num_inference_steps=2,
        guidance_scale=1.0, generator=torch.Generator().manual_seed(0), output_type="np",
    )  # fmt: skip
    frames = fam.pipeline(components)(**kwargs).frames
    assert bool(np.isfinite(frames).all())
    quant.convert_(student)
    quant.save_quantized(student, tmp_path / "deploy")
    assert quant.read_manifest(tmp_path / "deploy").layers[0].act_group_mode == "mod"


def test_qa_lora_checkpoint_is_merged_into_the_latent_weight(tmp_path):
    base = tiny_checkpoint("wan")
    transformer = get_family("wan").load_transformer(base, dtype="float32")
    folder = write_reference_checkpoint(transformer, tmp_path / "ref", lora_rank=4, seed=2)
    student = load_student(import_reference(folder, base, tmp_path / "student"))
    ref = load_file(str(folder / REF_TENSORS))
    name = "blocks.0.attn2.to_v"
    merged = ref[f"{name}.w"] + ref[f"{name}.loraB.weight"] @ ref[f"{name}.loraA.weight"]
    torch.testing.assert_close(quant.quantized_layers(student)[name].weight, merged)


def test_unquantized_reference_layers_stay_high_precision(tmp_path):
    base = tiny_checkpoint("wan")
    transformer = get_family("wan").load_transformer(base, dtype="float32")
    folder = write_reference_checkpoint(transformer, tmp_path / "ref", skip=["proj_out"])
    student = load_student(import_reference(folder, base, tmp_path / "student"))
    assert "proj_out" not in quant.quantized_layers(student)
    assert type(student.get_submodule("proj_out")) is torch.nn.Linear


def test_counter_mapping_reproduces_the_reference_sampling_counter():
    ref = torch.arange(50, dtype=torch.float32)  # logit value = group index, to read the table back
    timesteps = [999.0, 979.0, 959.0, 12.5]
    table = counter_table(ref, timesteps, calls_per_step=2)
    assert table.shape == (1000,)
    assert [int(table[int(t)]) for t in timesteps] == [49, 47, 45, 43]
    assert int(table[500]) == 500 % 50  # off the schedule: the training-time `mod` group
    with pytest.raises(ReferenceImportError, match="sampling steps 0 and 1 share the integer timestep 10"):
        counter_table(ref, [10.2, 10.7], calls_per_step=1)


def test_counter_mapping_end_to_end_writes_a_bin_student(wan_reference, tmp_path):
    base, folder = wan_reference
    out = import_reference(folder, base, tmp_path / "s", groups="counter", sampling_timesteps=[999.0, 500.0])
    manifest = read_student_manifest(out)
    assert (manifest.quant.activation.groups, manifest.quant.activation.group_mode) == (1000, "bin")
    assert manifest.run_config["calls_per_step"] == 2  # Wan: separate cond / uncond calls


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda t: t.pop("blocks.0.attn1.to_k.wquantizer.zero_point"),
            r"key blocks.0.attn1.to_k.wquantizer.zero_point is missing",
        ),
        (lambda t: t.pop("proj_out.aquantizer.upper"), r"key proj_out.aquantizer.upper is missing"),
        (
            lambda t: t.update({"proj_out.aquantizer.upper": torch.zeros(40)}),
            r"key proj_out.aquantizer.upper.*mismatched group count",
        ),
        (
            lambda t: t.update(
                {"proj_out.aquantizer.lower": torch.zeros(40), "proj_out.aquantizer.upper": torch.zeros(40)}
            ),
            r"mismatched group count",
        ),
        (lambda t: t.update({"blocks.0.mystery": torch.zeros(3)}), r"unknown key 'blocks.0.mystery'"),
        (
            lambda t: t.update({"proj_out.aquantizer.ps": torch.zeros(3)}),
            r"unknown key 'proj_out.aquantizer.ps'",
        ),
        (
            lambda t: t.update({"proj_out.wquantizer.L": torch.zeros(64, 4)}),
            r"key 'proj_out.wquantizer.L'.*Φ is still present",
        ),
        (lambda t: t.update({"extra.w": torch.zeros(3, 3)}), r"key 'extra.w' has no extra.wquantizer.scale"),
        (
            lambda t: t.update({"proj_out.loraA.weight": torch.zeros(4, 64)}),
            r"key 'proj_out.loraA.weight' has no proj_out.loraB.weight",
        ),
        (lambda t: t.update({"proj_out.w": torch.zeros(3, 3)}), r"key 'proj_out.w' has shape \(3, 3\)"),
    ],
)
def test_bad_reference_checkpoint_names_the_key_and_the_file(wan_reference, tmp_path, edit, message):
    base, folder = wan_reference
    bad = _copy(folder, tmp_path, edit)
    with pytest.raises(ReferenceImportError, match=message) as info:
        import_reference(bad, base, tmp_path / "student")
    assert str(bad) in str(info.value)
    assert not (tmp_path / "student").exists()


def test_expected_group_count_is_checked(wan_reference, tmp_path):
    base, folder = wan_reference
    with pytest.raises(ReferenceImportError, match=r"has 50 groups, expected 40"):
        import_reference(folder, base, tmp_path / "s", expected_groups=40)


def test_cli_imports_and_reports_bad_input_with_exit_code_2(wan_reference, tmp_path, capsys):
    base, folder = wan_reference
    assert main(["import-reference", str(folder), "--base", str(base), "--out", str(tmp_path / "s")]) == 0
    assert json.loads((tmp_path / "s" / "student_manifest.json").read_text())["family"] == "wan"
    bad = _copy(folder, tmp_path, lambda t: t.pop("proj_out.wquantizer.scale"))
    code = main(["import-reference", str(bad), "--base", str(base), "--out", str(tmp_path / "t")])
    assert code == 2
    assert "proj_out.w" in capsys.readouterr().err
