import shutil

import pytest

from qvgen.models import FAMILIES
from qvgen.models.checkpoint import check_folder, transformer_root
from qvgen.models.testing import tiny_checkpoint


@pytest.fixture
def wan_copy(tmp_path):
    dst = tmp_path / "wan"
    shutil.copytree(tiny_checkpoint("wan"), dst)
    return dst


@pytest.mark.parametrize("component", ["transformer", "vae", "text_encoder", "tokenizer", "scheduler"])
def test_folder_missing_a_component_names_it_and_the_path(wan_copy, component):
    shutil.rmtree(wan_copy / component)
    with pytest.raises(FileNotFoundError, match=f"missing component '{component}'") as info:
        FAMILIES["wan"].load(wan_copy)
    assert str(wan_copy / component) in str(info.value)


def test_component_with_missing_weights_names_the_component(wan_copy):
    (wan_copy / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(OSError, match="component 'vae'"):
        FAMILIES["wan"].load(wan_copy)


def test_a_hub_id_or_missing_folder_is_not_downloaded(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        check_folder("Wan-AI/Wan2.1-T2V-1.3B-Diffusers")
    with pytest.raises(FileNotFoundError, match="no transformer"):
        transformer_root(tmp_path)


def test_scheduler_config_naming_a_non_scheduler_is_refused(wan_copy):
    cfg = wan_copy / "scheduler" / "scheduler_config.json"
    cfg.write_text(cfg.read_text().replace("UniPCMultistepScheduler", "AutoencoderKLWan"))
    with pytest.raises(ValueError, match="not a diffusers scheduler"):
        FAMILIES["wan"].load(wan_copy)


def test_save_tiny_replaces_an_existing_folder_and_leaves_no_temp_dirs(tmp_path):
    out = tmp_path / "tiny"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    path = FAMILIES["cogvideox"].save_tiny(out)
    assert path == out.resolve()
    assert not (out / "stale.txt").exists() and (out / "model_index.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]
