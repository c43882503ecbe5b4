import json

import pytest
import torch
from accelerate import Accelerator
from torch import nn

from qvgen.train import checkpoint as ckpt


def _state(step: int, **config) -> ckpt.TrainState:
    cfg = {"model": {"family": "wan"}, "train": {"max_steps": 10, "seed": 1}, **config}
    return ckpt.TrainState(step=step, world_size=1, data_batches=step, phi_rank=4, config=cfg)


@pytest.fixture
def saved(tmp_path):
    accelerator = Accelerator(cpu=True)
    model = nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model, opt = accelerator.prepare(model, opt)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    gen = torch.Generator().manual_seed(5)
    torch.randn(3, generator=gen)
    root = tmp_path / "checkpoints"
    for step in (2, 4, 6):
        path = ckpt.save_checkpoint(accelerator, root, _state(step), {"sampling": gen}, keep_last=2)
    return accelerator, model, opt, gen, root, path


def test_save_keeps_the_last_n_complete_checkpoints_and_no_tmp_dirs(saved):
    _, _, _, _, root, path = saved
    names = sorted(p.name for p in root.iterdir())
    assert names == ["step-00000004", "step-00000006"]
    assert ckpt.latest_checkpoint(root) == path
    assert {"checksums.json", "train_state.json", "generators-rank0.safetensors"} <= {
        p.name for p in path.iterdir()
    }


def test_round_trip_restores_model_optimizer_and_generator(saved):
    accelerator, model, opt, gen, _, path = saved
    weight = model.weight.detach().clone()
    expected_draw = torch.randn(4, generator=torch.Generator().set_state(gen.get_state()))
    exp_avg = opt.state_dict()["state"][0]["exp_avg"].clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    torch.randn(10, generator=gen)
    opt.state[model.weight]["exp_avg"].zero_()
    state = ckpt.verify_checkpoint(path)
    ckpt.load_checkpoint(accelerator, path, {"sampling": gen})
    assert state.step == 6 and state.data_batches == 6
    assert torch.equal(model.weight, weight)
    assert torch.equal(opt.state_dict()["state"][0]["exp_avg"], exp_avg)
    assert torch.equal(torch.randn(4, generator=gen), expected_draw)


def test_corrupted_file_is_refused_naming_it(saved):
    path = saved[-1]
    target = path / "model.safetensors"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(ckpt.CheckpointError, match=r"model\.safetensors: sha256 mismatch"):
        ckpt.verify_checkpoint(path)


def test_unfinished_or_tampered_checkpoint_is_refused(saved):
    path = saved[-1]
    (path / "extra.bin").write_bytes(b"x")
    with pytest.raises(ckpt.CheckpointError, match="not listed"):
        ckpt.verify_checkpoint(path)
    (path / "extra.bin").unlink()
    (path / "checksums.json").unlink()
    with pytest.raises(ckpt.CheckpointError, match="incomplete checkpoint"):
        ckpt.verify_checkpoint(path)


def test_a_new_checkpoint_never_prunes_itself_and_a_resave_swaps_folders(saved):
    accelerator, _, _, gen, root, _ = saved  # steps 4 and 6 kept
    (root / "step-00000009").mkdir()  # a later folder the pruning must neither count nor keep instead
    path = ckpt.save_checkpoint(accelerator, root, _state(8), {"sampling": gen}, keep_last=2)
    assert sorted(p.name for p in root.iterdir()) == ["step-00000006", "step-00000008", "step-00000009"]
    again = ckpt.save_checkpoint(accelerator, root, _state(8), {"sampling": gen}, keep_last=2)
    assert again == path and ckpt.verify_checkpoint(path).step == 8
    assert not any(p.name.endswith((".tmp", ".old")) for p in root.iterdir())


def test_unfinished_tmp_folder_is_not_a_resume_candidate(tmp_path):
    (tmp_path / "step-00000008.tmp").mkdir()
    (tmp_path / "step-00000007.old").mkdir()
    (tmp_path / "step-00000003").mkdir()
    assert ckpt.latest_checkpoint(tmp_path) == tmp_path / "step-00000003"
    assert ckpt.latest_checkpoint(tmp_path / "missing") is None


def test_checkpoint_of_another_run_is_refused_listing_the_differences(saved):
    path = saved[-1]
    state = ckpt.verify_checkpoint(path)
    now = json.loads(json.dumps(state.config))
    now["train"]["seed"] = 2
    now["logging"] = {"every_n_steps": 5}  # not part of the run's identity
    with pytest.raises(ckpt.CheckpointError, match=r"train\.seed: checkpoint 1 vs now 2"):
        ckpt.check_compatible(path, state, now, world_size=1)
    with pytest.raises(ckpt.CheckpointError, match="world size: checkpoint 1 vs now 2"):
        ckpt.check_compatible(path, state, state.config, world_size=2)
    ckpt.check_compatible(path, state, {**state.config, "logging": {"x": 1}}, world_size=1)
    with pytest.raises(ckpt.CheckpointError, match=r"method"):
        ckpt.check_compatible(path, state, {**state.config, "method": {"kind": "qdm"}}, world_size=1)
