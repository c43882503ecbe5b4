"""Issue 13, fault injection: ENOSPC (OSError 28) in the middle of a deploy export; issue 32, item 5: the
same on a real full filesystem (a tmpfs the test mounts), where safetensors raises its own
`SafetensorError: ... No space left on device` (not an OSError).

The previous export must stay complete and loadable bit for bit, no temp file or folder may be left, and
the error must be one `OSError(ENOSPC)` naming the folder being written.
"""

import errno
import os
import shutil

import pytest
import safetensors.torch
import torch
from torch import nn

from qvgen.core import MARKER_NAME
from qvgen.core.testing import fill_filesystem, small_filesystem
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
    assert sorted(p.name for p in out.iterdir()) == [MARKER_NAME, "model.safetensors", "quant_manifest.json"]
    torch.testing.assert_close(load_quantized(Two(), out)(x), expected, rtol=0, atol=0)


class Wide(nn.Module):
    """Big enough (about 200 KB of tensors) that a few KB of free space cannot hold its export."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(256, 512)
        self.b = nn.Linear(512, 256)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


def _wide(seed: int) -> Wide:
    torch.manual_seed(seed)
    model = Wide()
    prepare_(model, CFG, keep_high_precision=())
    initialize_(model, progress=False)
    convert_(model)
    return model


@pytest.mark.parametrize("leave_bytes", [0, 64 << 10], ids=["no-byte-left", "64KiB-left"])
def test_export_onto_a_real_full_disk_is_one_oserror_and_keeps_the_previous_export(leave_bytes):
    """64 KiB left: the marker and folder fit, safetensors' own write fails (SafetensorError); 0 left: the
    first small write already fails. Both end as `cannot write DIR: no space left on device`."""
    with small_filesystem(4 << 20) as fs:
        out = fs / "deploy"
        old = _wide(0)
        save_quantized(old, out)
        before = {p.name: p.read_bytes() for p in out.iterdir()}
        x = torch.randn(3, 256)
        with torch.no_grad():
            expected = old(x)
        ballast = fill_filesystem(fs, leave_bytes=leave_bytes)
        assert shutil.disk_usage(fs).free <= leave_bytes + (64 << 10)
        with pytest.raises(OSError) as info:
            save_quantized(_wide(1), out)
        assert type(info.value) is OSError and info.value.errno == errno.ENOSPC
        assert str(info.value) == f"[Errno 28] cannot write {out}: no space left on device"
        assert "\n" not in str(info.value)
        if leave_bytes:
            assert type(info.value.__cause__).__name__ == "SafetensorError"  # safetensors' own error
        ballast.unlink()
        assert sorted(os.listdir(fs)) == ["deploy"]  # no temp folder beside it
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # bit for bit
        with torch.no_grad():
            assert torch.equal(load_quantized(Wide(), out)(x), expected)
