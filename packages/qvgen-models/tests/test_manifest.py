"""The fake-quant student on disk: save, rebuild from the base checkpoint, and the errors naming the file."""

import hashlib
import json
import re

import pytest
import torch
from torch import nn

from qvgen import quant
from qvgen.core import MARKER_NAME, seal_manifest
from qvgen.models import (
    FAMILIES,
    STUDENT_MANIFEST,
    STUDENT_TENSORS,
    StudentManifest,
    get_family,
    load_student,
    read_student_manifest,
    save_student,
)
from qvgen.models.testing import tiny_checkpoint


def _student(family: str, cfg: quant.QuantConfig, **prepare_kwargs) -> nn.Module:
    fam = get_family(family)
    student = fam.load_transformer(tiny_checkpoint(family))
    prepare_kwargs.setdefault("layer_roles", fam.layer_roles)
    layers = quant.prepare_(student, cfg, **prepare_kwargs)
    quant.initialize_(student, progress=False)
    with torch.no_grad():  # differ from a fresh prepare_ + initialize_
        for layer in layers.values():
            layer.weight.add_(0.01 * torch.randn_like(layer.weight))
            if isinstance(layer.act_quantizer, quant.ActivationQuantizer):
                layer.act_quantizer.clip_logit_hi.add_(torch.linspace(-1, 1, layer.act_quantizer.groups))
    return student.eval()


def _states_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def wan_student(tmp_path_factory):
    cfg = quant.QuantConfig.w4a4()
    student = _student("wan", cfg)
    out = tmp_path_factory.mktemp("student") / "fake_quant"
    save_student(student, out, family="wan", checkpoint=tiny_checkpoint("wan"), quant_config=cfg, steps=3)
    return student, out


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_student_round_trips_bitwise_through_its_base_checkpoint(family, tmp_path):
    cfg = quant.QuantConfig(weight=quant.MinMaxWeight(bits=3))
    student = _student(family, cfg)
    out = save_student(
        student, tmp_path / "s", family=family, checkpoint=tiny_checkpoint(family), quant_config=cfg,
        steps=7, qvgen_train_version="0.1.0", git_sha="abc", run_config={"seed": 1},
    )  # fmt: skip
    loaded = load_student(out)
    assert not loaded.training
    assert _states_equal(loaded, student)
    roles = {n: m.role for n, m in quant.quantized_layers(student).items()}
    assert {n: m.role for n, m in quant.quantized_layers(loaded).items()} == roles
    assert all(m.weight_quantizer.bits == 3 for m in quant.quantized_layers(loaded).values())
    manifest = read_student_manifest(out)
    assert (manifest.family, manifest.quant, manifest.layers, manifest.steps) == (family, cfg, roles, 7)
    assert (manifest.qvgen_train_version, manifest.git_sha, manifest.run_config) == (
        "0.1.0",
        "abc",
        {"seed": 1},
    )


def test_manifest_json_round_trips_to_an_equal_manifest(wan_student):
    _, out = wan_student
    manifest = read_student_manifest(out)
    assert StudentManifest.model_validate_json(manifest.model_dump_json()) == manifest
    assert manifest.checkpoint == str(tiny_checkpoint("wan").resolve())


def test_rebuild_uses_the_recorded_layers_and_roles_not_the_family_globs(tmp_path):
    # All roles `other` (no globs) with ffn_up at 3 bits, and proj_out left in high precision: the family's
    # globs would give other roles, other bit widths and one more quantized layer.
    cfg = quant.QuantConfig(role_overrides={quant.LayerRole.ffn_up: quant.RoleOverride(weight_bits=3)})
    student = _student("wan", cfg, layer_roles={}, keep_high_precision=("proj_out",))
    assert "proj_out" not in quant.quantized_layers(student)
    out = save_student(
        student, tmp_path / "s", family="wan", checkpoint=tiny_checkpoint("wan"), quant_config=cfg
    )
    loaded = load_student(out)
    layers = quant.quantized_layers(loaded)
    assert set(layers) == set(quant.quantized_layers(student))
    assert {m.role for m in layers.values()} == {quant.LayerRole.other}
    assert all(m.weight_quantizer.bits == 4 for m in layers.values())
    assert isinstance(loaded.get_submodule("proj_out"), nn.Linear)
    assert _states_equal(loaded, student)


def test_save_replaces_its_own_folder_and_leaves_no_temp_folders(wan_student, tmp_path):
    student, _ = wan_student
    out = tmp_path / "s"
    kwargs = {"family": "wan", "checkpoint": tiny_checkpoint("wan"), "quant_config": quant.QuantConfig()}
    save_student(student, out, **kwargs)
    (out / "stale.txt").write_text("old")
    path = save_student(student, out, **kwargs)
    assert path == out.resolve()
    assert sorted(p.name for p in out.iterdir()) == sorted([MARKER_NAME, STUDENT_MANIFEST, STUDENT_TENSORS])
    assert [p.name for p in tmp_path.iterdir()] == ["s"]


def test_save_refuses_a_folder_it_did_not_write_and_leaves_it_alone(wan_student, tmp_path):
    """Issue 32: no tool deletes or replaces a folder it did not create."""
    student, _ = wan_student
    user = tmp_path / "mine"
    (user / "sub").mkdir(parents=True)
    (user / "notes.txt").write_text("keep")
    (user / "sub" / "important.bin").write_bytes(b"\x01")
    kwargs = {"family": "wan", "checkpoint": tiny_checkpoint("wan"), "quant_config": quant.QuantConfig()}
    with pytest.raises(ValueError, match=r"not empty and was not written by qvgen\.models\.save_student"):
        save_student(student, user, **kwargs)
    assert sorted(p.relative_to(user).as_posix() for p in user.rglob("*")) == [
        "notes.txt",
        "sub",
        "sub/important.bin",
    ]


def test_save_refuses_a_student_with_phi_attached_or_without_quantized_layers(wan_student, tmp_path):
    student, _ = wan_student
    plain = get_family("wan").load_transformer(tiny_checkpoint("wan"))
    kwargs = {"family": "wan", "checkpoint": tiny_checkpoint("wan"), "quant_config": quant.QuantConfig()}
    with pytest.raises(ValueError, match="no QuantLinear"):
        save_student(plain, tmp_path / "a", **kwargs)
    layer = next(iter(quant.quantized_layers(student).values()))
    layer.lowrank = nn.Identity()
    try:
        with pytest.raises(ValueError, match="Φ is still attached"):
            save_student(student, tmp_path / "b", **kwargs)
    finally:
        layer.lowrank = None
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_save_refuses_an_unknown_family(wan_student, tmp_path):
    student, _ = wan_student
    with pytest.raises(ValueError, match="unknown model family 'sora'"):
        save_student(
            student, tmp_path / "s", family="sora", checkpoint=tmp_path, quant_config=quant.QuantConfig()
        )


def test_missing_manifest_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / STUDENT_MANIFEST))):
        load_student(tmp_path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: {**m, "schema_version": 2}, "schema_version"),
        (lambda m: {**m, "family": "sora"}, "unknown model family"),
        (lambda m: {**m, "layers": {**m["layers"], "blocks.0.attn1.to_q": "attention"}}, "layers"),
    ],
)
def test_invalid_manifest_is_refused_naming_the_file_and_field(wan_student, tmp_path, edit, message):
    _, out = wan_student
    data = json.loads((out / STUDENT_MANIFEST).read_text())
    (tmp_path / STUDENT_MANIFEST).write_text(json.dumps(edit(data)))
    with pytest.raises(ValueError, match=message) as info:
        load_student(tmp_path)
    assert str(tmp_path / STUDENT_MANIFEST) in str(info.value)


def test_student_of_another_family_is_refused_when_a_family_is_asked_for(wan_student):
    _, out = wan_student
    with pytest.raises(ValueError, match=r"student_manifest\.json: a 'wan' student, but a 'cogvideox'"):
        load_student(out, family="cogvideox")


def test_recorded_layer_missing_from_the_checkpoint_is_refused(wan_student, tmp_path):
    _, out = wan_student
    data = json.loads((out / STUDENT_MANIFEST).read_text())
    data["layers"]["blocks.9.ffn.net.2"] = "ffn_down"
    (tmp_path / STUDENT_MANIFEST).write_text(json.dumps(seal_manifest(data)))  # sealed: reach the check
    (tmp_path / STUDENT_TENSORS).write_bytes((out / STUDENT_TENSORS).read_bytes())
    with pytest.raises(
        ValueError, match=r"does not have the recorded quantized layers.*blocks\.9\.ffn\.net\.2"
    ):
        load_student(tmp_path)


def test_unreadable_or_mismatched_tensors_name_the_tensor_file(wan_student, tmp_path):
    _, out = wan_student
    (tmp_path / STUDENT_MANIFEST).write_text((out / STUDENT_MANIFEST).read_text())
    (tmp_path / STUDENT_TENSORS).write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / STUDENT_TENSORS}: sha256 does not match")):
        load_student(tmp_path)
    other = _student("wan", quant.QuantConfig.w4a16())  # no activation clip tensors
    save_student(
        other,
        tmp_path / "w4a16",
        family="wan",
        checkpoint=tiny_checkpoint("wan"),
        quant_config=quant.QuantConfig.w4a16(),
    )
    (tmp_path / STUDENT_TENSORS).write_bytes((tmp_path / "w4a16" / STUDENT_TENSORS).read_bytes())
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / STUDENT_TENSORS}: sha256 does not match")):
        load_student(tmp_path)
    data = json.loads((out / STUDENT_MANIFEST).read_text())  # a consistent manifest for the foreign tensors
    data["tensors_sha256"] = hashlib.sha256((tmp_path / STUDENT_TENSORS).read_bytes()).hexdigest()
    (tmp_path / STUDENT_MANIFEST).write_text(json.dumps(seal_manifest(data)))
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / STUDENT_TENSORS}: tensors do not fit")):
        load_student(tmp_path)


def test_flipped_bytes_in_the_student_tensors_are_refused_naming_the_file(wan_student, tmp_path):
    """Issue 13, failure 4: same-size corruption of `model.safetensors` loaded without complaint."""
    _, out = wan_student
    manifest = json.loads((out / STUDENT_MANIFEST).read_text())
    assert manifest["tensors_sha256"] == hashlib.sha256((out / STUDENT_TENSORS).read_bytes()).hexdigest()
    (tmp_path / STUDENT_MANIFEST).write_text((out / STUDENT_MANIFEST).read_text())
    data = bytearray((out / STUDENT_TENSORS).read_bytes())
    mid = len(data) // 2
    data[mid : mid + 100] = bytes(b ^ 0x5A for b in data[mid : mid + 100])
    (tmp_path / STUDENT_TENSORS).write_bytes(bytes(data))
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / STUDENT_TENSORS}: sha256 does not match")):
        load_student(tmp_path)


# --- issue 32, item 4: a hand-edited student manifest ------------------------------------------------------


def _set(path: tuple[str, ...], value):
    def edit(m):
        node = m
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        return m

    return edit


STUDENT_EDITS = {
    "activation bits 4->8": (_set(("quant", "activation", "bits"), 8), r"quant\.activation\.bits", True),
    "num_train_timesteps": (_set(("num_train_timesteps",), 2000), r"num_train_timesteps", True),
    "a layer's role": (
        _set(("layers", "blocks.0.ffn.net.0.proj"), "other"),
        r"layers\['blocks\.0\.ffn",
        False,
    ),
}


def _copy_student(out, tmp_path, edit, *, seal_again):
    data = edit(json.loads((out / STUDENT_MANIFEST).read_text()))
    (tmp_path / STUDENT_MANIFEST).write_text(json.dumps(seal_manifest(data) if seal_again else data))
    (tmp_path / STUDENT_TENSORS).write_bytes((out / STUDENT_TENSORS).read_bytes())


def _output(model):
    g = torch.Generator().manual_seed(2)
    inputs = dict(
        hidden_states=torch.randn(1, 16, 2, 8, 8, generator=g),
        timestep=torch.tensor([870.0]),
        encoder_hidden_states=torch.randn(1, 8, 64, generator=g),
    )
    with torch.no_grad():
        return model(**inputs)[0]


@pytest.mark.parametrize("name", list(STUDENT_EDITS))
def test_an_edited_student_manifest_loaded_silently_before_seals(wan_student, tmp_path, name):
    _, out = wan_student
    edit, _, changes_output = STUDENT_EDITS[name]
    assert "blocks.0.ffn.net.0.proj" in read_student_manifest(out).layers
    _copy_student(out, tmp_path, edit, seal_again=True)  # what the loader saw before manifests were sealed
    edited = load_student(tmp_path)  # no error
    assert torch.equal(_output(edited), _output(load_student(out))) is not changes_output


@pytest.mark.parametrize("name", list(STUDENT_EDITS))
def test_an_edited_field_of_the_student_manifest_is_refused_naming_file_and_field(
    wan_student, tmp_path, name
):
    _, out = wan_student
    edit, field, _ = STUDENT_EDITS[name]
    _copy_student(out, tmp_path, edit, seal_again=False)
    with pytest.raises(
        ValueError, match=rf"student_manifest\.json: the manifest was edited .*changed: {field}"
    ) as info:
        load_student(tmp_path)
    assert str(tmp_path / STUDENT_MANIFEST) in str(info.value)


def test_a_student_manifest_without_a_seal_is_refused_with_the_fix(wan_student, tmp_path):
    _, out = wan_student
    _copy_student(
        out,
        tmp_path,
        lambda m: {k: v for k, v in m.items() if k not in ("digest", "field_digests")},
        seal_again=False,
    )
    with pytest.raises(ValueError, match=r"student_manifest\.json: the manifest has no digest.*save_student"):
        read_student_manifest(tmp_path)
