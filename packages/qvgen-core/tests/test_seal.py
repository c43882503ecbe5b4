"""Sealed manifests: an edit of any field is refused naming the file and the field."""

import copy
import json
from pathlib import Path

import pytest

from qvgen.core import check_manifest_seal, seal_manifest, seal_manifest_file, sealed_manifest_json

MANIFEST = {
    "schema_version": 1,
    "num_train_timesteps": 1000,
    "source": {"config": {"eps": 1e-6, "rope_max_seq_len": 1024, "patch_size": [1, 2, 2]}},
    "layers": [{"name": "blocks.0.up", "act_bits": 4}, {"name": "blocks.0.down", "act_bits": 4}],
    "roles": {"blocks.0.up": "ffn_up"},
}


def _refused(data, path="/d/m.json") -> str:
    with pytest.raises(ValueError) as info:
        check_manifest_seal(path, data, "export it again")
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)
    return str(info.value)


def test_a_sealed_manifest_passes_whatever_its_key_order_and_sealing_is_idempotent():
    sealed = seal_manifest(MANIFEST)
    check_manifest_seal("m.json", dict(reversed(list(sealed.items()))), "r")
    assert seal_manifest(sealed) == sealed
    assert json.loads(sealed_manifest_json(MANIFEST)) == sealed


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (lambda m: m["layers"][1].update(act_bits=8), "changed: layers['blocks.0.down'].act_bits)"),
        (lambda m: [e.update(act_bits=3) for e in m["layers"]], "layers['blocks.0.up'].act_bits"),
        (lambda m: m["source"]["config"].update(eps=1e-5), "changed: source.config.eps)"),
        (lambda m: m.update(num_train_timesteps=999), "changed: num_train_timesteps)"),
        (lambda m: m["roles"].update({"blocks.0.up": "other"}), "changed: roles['blocks.0.up'])"),
        (lambda m: m["layers"].pop(), "layers['blocks.0.down'] (removed)"),
        (lambda m: m.update(extra=1), "extra (added)"),
        (lambda m: m.update(digest="0" * 64), "changed: its seal (digest, field_digests))"),
    ],
)
def test_an_edit_is_refused_naming_the_file_and_the_field(edit, named):
    data = copy.deepcopy(seal_manifest(MANIFEST))
    edit(data)
    assert named in _refused(data)


def test_an_unsealed_manifest_is_refused_with_the_remedy_and_can_be_sealed_as_it_is(tmp_path: Path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps(MANIFEST))
    message = _refused(json.loads(path.read_text()), str(path))
    assert "has no digest" in message and "export it again" in message and "seal_manifest_file" in message
    seal_manifest_file(path)
    check_manifest_seal(path, json.loads(path.read_text()), "r")
