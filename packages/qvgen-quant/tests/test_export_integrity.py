"""Issue 13, failure 4: 100 flipped bytes inside `model.safetensors` (same size) loaded without complaint."""

import json

import pytest
import torch
from torch import nn

from qvgen.quant import ClippedDynamicActivation, LSQPlusWeight, QuantConfig, initialize_, prepare_
from qvgen.quant.export import convert_, load_quantized, save_quantized
from qvgen.quant.manifest import MANIFEST_FILE, TENSORS_FILE

CFG = QuantConfig(weight=LSQPlusWeight(bits=4), activation=ClippedDynamicActivation(bits=4, groups=1))


class Two(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(64, 128)
        self.b = nn.Linear(128, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


@pytest.fixture
def deploy_dir(tmp_path):
    model = Two()
    prepare_(model, CFG, keep_high_precision=())
    initialize_(model, progress=False)
    convert_(model)
    save_quantized(model, tmp_path / "deploy")
    return tmp_path / "deploy"


def flip_bytes(path, count=100):
    """Flip `count` bytes in the middle of the file (its size is unchanged)."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    for i in range(mid, mid + count):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))


def test_manifest_records_the_sha256_of_the_tensors_file(deploy_dir):
    import hashlib

    manifest = json.loads((deploy_dir / MANIFEST_FILE).read_text())
    assert manifest["tensors_sha256"] == hashlib.sha256((deploy_dir / TENSORS_FILE).read_bytes()).hexdigest()
    load_quantized(Two(), deploy_dir)


def test_flipped_bytes_of_the_same_size_are_refused_naming_the_file(deploy_dir):
    size = (deploy_dir / TENSORS_FILE).stat().st_size
    flip_bytes(deploy_dir / TENSORS_FILE)
    assert (deploy_dir / TENSORS_FILE).stat().st_size == size
    with pytest.raises(ValueError, match=r"model\.safetensors: sha256 .* does not match"):
        load_quantized(Two(), deploy_dir)


def test_manifest_without_a_checksum_is_refused(deploy_dir):
    path = deploy_dir / MANIFEST_FILE
    raw = json.loads(path.read_text())
    del raw["tensors_sha256"]
    path.write_text(json.dumps(raw))
    with pytest.raises(
        ValueError, match=r"(?s)quant_manifest\.json: invalid deploy manifest.*tensors_sha256"
    ):
        load_quantized(Two(), deploy_dir)
