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
        (
            lambda t: t["blocks.0.attn1.to_q.wquantizer.scale"].__setitem__((3, 0), float("nan")),
            r"key blocks.0.attn1.to_q.wquantizer.scale: 1 non-finite value\(s\), first at index \(3, 0\)",
        ),
        (
            lambda t: t["blocks.1.ffn.net.2.wquantizer.scale"].__setitem__((5, 0), -0.01),
            r"key blocks.1.ffn.net.2.wquantizer.scale: scales must be > 0, row 5 is -0.01",
        ),
        (
            lambda t: t["proj_out.wquantizer.scale"].__setitem__((0, 0), 0.0),
            r"key proj_out.wquantizer.scale: scales must be > 0, row 0 is 0 ",
        ),
        (
            lambda t: t["proj_out.wquantizer.zero_point"].__setitem__((2, 0), float("inf")),
            r"key proj_out.wquantizer.zero_point: 1 non-finite value\(s\), first at index \(2, 0\)",
        ),
        (
            lambda t: t["blocks.0.attn2.to_k.aquantizer.lower"].__setitem__(7, float("nan")),
            r"key blocks.0.attn2.to_k.aquantizer.lower: 1 non-finite value\(s\), first at group 7",
        ),
        (
            lambda t: t["proj_out.aquantizer.upper"].__setitem__(49, float("-inf")),
            r"key proj_out.aquantizer.upper: 1 non-finite value\(s\), first at group 49",
        ),
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


@pytest.mark.parametrize(
    ("bits", "message"),
    [
        (dict(weight_bits=8), r"imply 4-bit weights, not --weight-bits 8: the largest is 1[5-9] of 255"),
        (
            dict(weight_bits=3, act_bits=8),
            r"imply 4-bit weights, not --weight-bits 3: [4-6]\d% of them fall outside \[0, 7\]",
        ),
    ],
)
def test_weight_bits_that_contradict_the_codes_are_refused(wan_reference, tmp_path, bits, message):
    base, folder = wan_reference
    with pytest.raises(ReferenceImportError, match=message) as info:
        import_reference(folder, base, tmp_path / "s", **bits)
    first = str(info.value).split(":")[0]
    assert first == str(folder / REF_TENSORS) and ".wquantizer.scale" in str(info.value)
    assert not (tmp_path / "s").exists()


def test_weight_bits_default_to_the_width_the_codes_imply(tmp_path):
    base = tiny_checkpoint("wan")
    transformer = get_family("wan").load_transformer(base, dtype="float32")
    folder = write_reference_checkpoint(transformer, tmp_path / "ref", bits=3, seed=3)
    manifest = read_student_manifest(import_reference(folder, base, tmp_path / "s"))
    assert (manifest.quant.weight.bits, manifest.quant.activation.bits) == (3, 3)
    manifest = read_student_manifest(
        import_reference(folder, base, tmp_path / "t", weight_bits=3, act_bits=8)
    )
    assert (manifest.quant.weight.bits, manifest.quant.activation.bits) == (3, 8)  # A bits: not in the codes


def _sample(student, base, *, steps, guidance=5.0):
    fam = get_family("wan")
    components = dataclasses.replace(fam.load(base), transformer=student)
    kwargs = fam.sample_kwargs(
        components, prompt="a red square", negative_prompt="blur", height=16, width=16, num_frames=1,
        num_inference_steps=steps, guidance_scale=guidance, generator=torch.Generator().manual_seed(0),
        output_type="latent",
    )  # fmt: skip
    with torch.no_grad():
        return fam.pipeline(components)(**kwargs).frames


@pytest.mark.parametrize("fix", [True, False])
def test_reference_mode_replays_the_reference_sampling_counter_call_for_call(wan_reference, tmp_path, fix):
    base, folder = wan_reference
    out = import_reference(folder, base, tmp_path / "s", groups="reference", reference_fix=fix)
    manifest = read_student_manifest(out)
    assert manifest.quant.activation.group_mode == ("reference" if fix else "reference_nofix")
    assert (manifest.quant.activation.groups, manifest.run_config["reference_fix"]) == (50, fix)
    student = load_student(out)  # the manifest alone makes the reloaded student replay the counter
    with quant.record_call_groups(student) as groups:
        _sample(student, base, steps=50)
    expected = quant.reference_call_groups(50, groups=50, cfg=True, fix=fix)
    assert len(groups) == 100
    assert sum(g == e for g, e in zip(groups, expected, strict=True)) == 100
    if fix:  # the unconditional call of step s has its own group 48 - 2s, not the conditional one's
        assert groups[:4] == [49, 48, 47, 46] and groups[50:] == [0] * 50
    with quant.record_call_groups(student) as again:  # the next pipeline call starts over
        _sample(student, base, steps=3)
    assert again == quant.reference_call_groups(3, groups=50, cfg=True, fix=fix)


def test_reference_mode_layers_compute_the_reference_forward_of_each_calls_group(wan_reference, tmp_path):
    base, folder = wan_reference
    student = load_student(import_reference(folder, base, tmp_path / "s", groups="reference")).double()
    ref = load_file(str(folder / REF_TENSORS))
    name = "blocks.1.attn1.to_v"
    layer = quant.quantized_layers(student)[name]
    r = {k[len(name) + 1 :]: v.double() for k, v in ref.items() if k.startswith(name + ".")}
    context = quant.timestep_context(student)
    x = torch.randn(1, 12, layer.in_features, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for call, t in enumerate([999.0, 999.0, 979.0, 979.0], start=1):
        context.begin_call(torch.tensor([t]))  # what the transformer's pre-hook does each call
        expected = reference_layer(
            x, r["w"], r["b"], r["wquantizer.scale"], r["wquantizer.zero_point"],
            r["aquantizer.lower"], r["aquantizer.upper"], quant.reference_group(call, 50),
        )  # fmt: skip
        with torch.no_grad():
            torch.testing.assert_close(layer(x), expected, rtol=1e-6, atol=1e-6, msg=f"call {call}")


def test_reference_mode_exports_to_deploy_with_its_group_mode(wan_reference, tmp_path):
    base, folder = wan_reference
    student = load_student(import_reference(folder, base, tmp_path / "s", groups="reference"))
    quant.convert_(student)
    quant.save_quantized(student, tmp_path / "deploy")
    assert quant.read_manifest(tmp_path / "deploy").layers[0].act_group_mode == "reference"


def test_cli_reference_groups_and_bit_checks(wan_reference, tmp_path, capsys):
    from typing import get_args

    from qvgen.train.cli import IMPORT_GROUP_MAPPINGS
    from qvgen.train.reference import GroupMapping

    assert get_args(GroupMapping) == IMPORT_GROUP_MAPPINGS
    base, folder = wan_reference
    args = ["import-reference", str(folder), "--base", str(base)]
    assert main([*args, "--out", str(tmp_path / "s"), "--groups", "reference", "--no-reference-fix"]) == 0
    manifest = read_student_manifest(tmp_path / "s")
    assert (manifest.quant.activation.group_mode, manifest.quant.weight.bits) == ("reference_nofix", 4)
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "t"), "--weight-bits", "8"]) == 2
    err = capsys.readouterr().err
    assert "imply 4-bit weights" in err and str(folder) in err and len(err.strip().splitlines()) == 1
    assert main([*args, "--out", str(tmp_path / "u"), "--no-reference-fix"]) == 2
    assert "only applies to groups='reference'" in capsys.readouterr().err
