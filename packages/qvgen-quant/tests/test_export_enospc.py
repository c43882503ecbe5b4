"""Issue 13, fault injection: ENOSPC (OSError 28) in the middle of a deploy export.

The previous export must stay complete and loadable, no temp file or folder may be left, and the error
must name the folder being written.
"""

import errno

import pytest
import safetensors.torch
import torch
from torch import nn

from qvgen.quant import ClippedDynamicActivation, LSQPlusWeight, QuantConfig, initialize_, prepare_
from qvgen.quant import export as export_module
from qvgen.quant.export import convert_, load_quantized, save_quantized

CFG = QuantConfig(weight=LSQPlusWeight(bits=4), activation=ClippedDynamicActivation(bits=4, groups=1))


class Two(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(64, 128)
        self.b = nn.Linear(128, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


def _deployed(seed: int) -> Two:
    torch.manual_seed(seed)
    model = Two()
    prepare_(model, CFG, keep_high_precision=())
    initialize_(model, progress=False)
    convert_(model)
    return model


def test_enospc_mid_export_keeps_the_previous_folder_and_leaves_no_temp(tmp_path, monkeypatch):
    out = tmp_path / "deploy"
    old = _deployed(0)
    save_quantized(old, out)
    x = torch.randn(3, 64)
    expected = old(x)

    def disk_full(tensors, filename, metadata=None):
        with open(filename, "wb") as f:  # half a file, then the disk is full
            f.write(safetensors.torch.save(tensors, metadata)[:1000])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export_module, "save_file", disk_full)
    with pytest.raises(OSError, match=rf"{out}") as info:
        save_quantized(_deployed(1), out)
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deploy"]  # no temp folder beside it
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors", "quant_manifest.json"]
    torch.testing.assert_close(load_quantized(Two(), out)(x), expected, rtol=0, atol=0)
