"""Issue 13, fault injection: ENOSPC (OSError 28) in the middle of a checkpoint save.

The previous checkpoint must stay intact (checksums verify) and loadable, no `.tmp` folder may be left,
and the error must name the checkpoint being written.
"""

import errno

import pytest
import torch
from accelerate import Accelerator
from torch import nn

from qvgen.train import checkpoint as ckpt


def _state(step: int) -> ckpt.TrainState:
    cfg = {"model": {"family": "wan"}, "train": {"max_steps": 10, "seed": 1}}
    return ckpt.TrainState(step=step, world_size=1, data_batches=step, phi_rank=None, config=cfg)


def test_enospc_mid_checkpoint_keeps_the_previous_one_and_leaves_no_tmp(tmp_path, monkeypatch):
    accelerator = Accelerator(cpu=True)
    model = nn.Linear(4, 3)
    model, _ = accelerator.prepare(model, torch.optim.AdamW(model.parameters()))
    gen = torch.Generator().manual_seed(5)
    root = tmp_path / "checkpoints"
    previous = ckpt.save_checkpoint(accelerator, root, _state(2), {"sampling": gen}, keep_last=2)
    weight = model.weight.detach().clone()

    def disk_full(path, generators):  # accelerate has written the model and optimizer by now
        path.write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt, "save_generators", disk_full)
    with torch.no_grad():
        model.weight.add_(1.0)
    with pytest.raises(OSError, match=r"cannot write .*step-00000004: no space left on device") as info:
        ckpt.save_checkpoint(accelerator, root, _state(4), {"sampling": gen}, keep_last=2)
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert sorted(p.name for p in root.iterdir()) == ["step-00000002"]
    assert ckpt.latest_checkpoint(root) == previous
    assert ckpt.verify_checkpoint(previous).step == 2
    ckpt.load_checkpoint(accelerator, previous, {"sampling": gen})
    assert torch.equal(model.weight, weight)
