"""Issue 32, item 4: a hand-edited `quant_manifest.json` loaded silently and changed the model's output.

The manifest is now sealed (`qvgen.core.sealed_manifest_json`): an edit of any field is refused on load,
naming the file and the field. "Before" is reproduced by sealing the edited manifest again, which is what
the loader saw before seals existed: it loads without a word and computes something nobody trained.
"""

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from qvgen.core import MARKER_NAME, Provenance, seal_manifest, seal_manifest_file
from qvgen.quant import (
    ClippedDynamicActivation,
    LSQPlusWeight,
    QuantConfig,
    convert_,
    initialize_,
    load_quantized,
    prepare_,
    save_quantized,
)
from qvgen.quant.manifest import MANIFEST_FILE, TENSORS_FILE

diffusers = pytest.importorskip("diffusers")  # a real config (eps, rope_max_seq_len); not a dependency

WAN_TINY = dict(
    num_layers=2, num_attention_heads=2, attention_head_dim=64, text_dim=64, ffn_dim=256, freq_dim=256,
    rope_max_seq_len=32, eps=1e-6,
)  # fmt: skip
CFG = QuantConfig(weight=LSQPlusWeight(bits=4), activation=ClippedDynamicActivation(bits=4, groups=4))


def _inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return dict(
        hidden_states=torch.randn(2, 16, 3, 8, 8, generator=g),
        timestep=torch.tensor([120.0, 870.0]),
        encoder_hidden_states=torch.randn(2, 16, 64, generator=g),
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.Tensor]:
    """A tiny Wan deploy export (4 clip groups, trained-looking clips) and its output on fixed inputs."""
    torch.manual_seed(0)
    model = diffusers.WanTransformer3DModel(**WAN_TINY).eval()
    prepare_(model, CFG)
    initialize_(model, progress=False)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "clip_logit" in name:
                p.uniform_(0.5, 4.0)
    convert_(model)
    folder = tmp_path_factory.mktemp("wan") / "deploy"
    save_quantized(model, folder, provenance=Provenance.of("test", {"run": "r1", "steps": 4}))
    with torch.no_grad():
        return folder, model(**_inputs())[0]


@pytest.fixture
def deploy(exported: tuple[Path, torch.Tensor], tmp_path: Path) -> Path:
    return Path(shutil.copytree(exported[0], tmp_path / "deploy"))


def _every_layer(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(raw: dict[str, Any]) -> None:
        for entry in raw["layers"]:
            entry[key] = value

    return edit


def _config(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda raw: raw["source"]["config"].__setitem__(key, value)


EDITS = {
    "act_bits 4->8": (_every_layer("act_bits", 8), r"layers\[\*\]\.act_bits \(\d+ entries\)", True),
    "act_bits 4->3": (_every_layer("act_bits", 3), r"layers\[\*\]\.act_bits \(\d+ entries\)", True),
    "eps": (_config("eps", 0.1), r"source\.config\.eps", True),
    "num_train_timesteps": (
        lambda raw: raw.__setitem__("num_train_timesteps", 2000),
        r"num_train_timesteps",
        True,
    ),
    # positions here stay below either length, so the output happens to be equal; the rotary table is not
    "rope_max_seq_len": (_config("rope_max_seq_len", 1024), r"source\.config\.rope_max_seq_len", False),
}


def _edit(folder: Path, edit: Callable[[dict[str, Any]], None], *, seal_again: bool) -> None:
    path = folder / MANIFEST_FILE
    raw = json.loads(path.read_text())
    edit(raw)
    path.write_text(json.dumps(seal_manifest(raw) if seal_again else raw, indent=2))


@pytest.mark.parametrize("name", list(EDITS))
def test_an_edited_field_loaded_silently_and_changed_the_output_before_seals(
    name: str, deploy: Path, exported: tuple[Path, torch.Tensor]
) -> None:
    edit, _, changes_output = EDITS[name]
    _edit(deploy, edit, seal_again=True)  # what the loader saw before manifests were sealed
    with torch.no_grad():
        out = load_quantized(deploy)(**_inputs())[0]  # no error: the old, silent load
    assert torch.equal(out, exported[1]) is not changes_output


@pytest.mark.parametrize("name", list(EDITS))
def test_an_edited_field_of_the_deploy_manifest_is_refused_naming_file_and_field(
    name: str, deploy: Path
) -> None:
    edit, field, _ = EDITS[name]
    _edit(deploy, edit, seal_again=False)
    with pytest.raises(
        ValueError, match=rf"{MANIFEST_FILE}: the manifest was edited .*changed: {field}"
    ) as info:
        load_quantized(deploy)
    assert str(deploy / MANIFEST_FILE) in str(info.value) and "\n" not in str(info.value)


def test_an_edit_of_one_layer_names_the_layer_and_its_field(deploy: Path) -> None:
    raw = json.loads((deploy / MANIFEST_FILE).read_text())
    first = raw["layers"][0]["name"]
    raw["layers"][0]["act_bits"] = 8
    (deploy / MANIFEST_FILE).write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=rf"changed: layers\['{first}'\]\.act_bits\)"):
        load_quantized(deploy)


def test_an_unedited_export_loads_bit_for_bit(deploy: Path, exported: tuple[Path, torch.Tensor]) -> None:
    before = (deploy / TENSORS_FILE).read_bytes()
    with torch.no_grad():
        assert torch.equal(load_quantized(deploy)(**_inputs())[0], exported[1])
    assert (deploy / TENSORS_FILE).read_bytes() == before


def test_reformatting_the_json_without_changing_values_still_loads(deploy: Path) -> None:
    path = deploy / MANIFEST_FILE
    path.write_text(json.dumps(json.loads(path.read_text()), sort_keys=True))  # other order, no indent
    load_quantized(deploy)


def test_an_edited_digest_is_refused(deploy: Path) -> None:
    path = deploy / MANIFEST_FILE
    raw = json.loads(path.read_text())
    raw["digest"] = "0" * 64
    path.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=r"edited .*changed: its seal"):
        load_quantized(deploy)


def test_a_manifest_without_a_seal_is_refused_with_the_fix_and_loads_once_sealed(deploy: Path) -> None:
    path = deploy / MANIFEST_FILE
    raw = json.loads(path.read_text())
    del raw["digest"], raw["field_digests"]  # a manifest written before seals existed
    path.write_text(json.dumps(raw))
    with pytest.raises(
        ValueError,
        match=r"quant_manifest\.json: the manifest has no digest.*save_quantized.*seal_manifest_file",
    ):
        load_quantized(deploy)
    seal_manifest_file(path)  # the documented way to accept it as it is
    load_quantized(deploy)


def test_the_export_records_its_provenance_and_marker(deploy: Path) -> None:
    from qvgen.quant import read_manifest

    manifest = read_manifest(deploy)
    assert manifest.provenance is not None and manifest.provenance.facts == {"run": "r1", "steps": "4"}
    assert manifest.digest is not None and (deploy / MARKER_NAME).is_file()


def test_save_quantized_refuses_a_folder_it_did_not_write_and_leaves_it_alone(
    exported: tuple[Path, torch.Tensor], tmp_path: Path
) -> None:
    user = tmp_path / "mine"
    (user / "sub").mkdir(parents=True)
    (user / "notes.txt").write_text("keep")
    (user / "sub" / "important.bin").write_bytes(b"\x01")
    model = load_quantized(exported[0])
    with pytest.raises(ValueError, match=r"is not empty and was not written by qvgen\.quant\.save_quantized"):
        save_quantized(model, user)
    assert sorted(p.relative_to(user).as_posix() for p in user.rglob("*")) == [
        "notes.txt",
        "sub",
        "sub/important.bin",
    ]
    save_quantized(model, exported[0].parent / "again")  # a new folder, then its own folder again
    save_quantized(model, exported[0].parent / "again")
