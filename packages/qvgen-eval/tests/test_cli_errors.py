"""Issue 13, failure 6: `qvgen-eval sample` on a truncated deploy folder printed a full traceback."""

import pytest
import yaml

from qvgen import quant
from qvgen.eval.cli import main
from qvgen.models import get_family
from qvgen.models.testing import tiny_checkpoint


@pytest.fixture
def truncated_sample_config(tmp_path):
    fam, ckpt = get_family("wan"), tiny_checkpoint("wan")
    student = fam.load_transformer(ckpt)
    quant.prepare_(student, quant.QuantConfig(), layer_roles=fam.layer_roles)
    quant.initialize_(student, progress=False)
    quant.convert_(student)
    quant.save_quantized(student, tmp_path / "deploy", identity=str(ckpt))
    tensors = tmp_path / "deploy" / "model.safetensors"
    tensors.write_bytes(tensors.read_bytes()[: tensors.stat().st_size // 2])  # a copy cut short
    cfg = {
        "family": "wan",
        "model": {"kind": "deploy", "path": str(tmp_path / "deploy"), "base": str(ckpt)},
        "prompts": {"prompts": ["a red square moves left"]},
        "out_dir": str(tmp_path / "videos"),
        "sampling": {"height": 32, "width": 32, "num_frames": 5, "num_inference_steps": 1},
    }
    path = tmp_path / "sample.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, tensors


def test_truncated_deploy_folder_is_one_message_and_exit_1(truncated_sample_config, capsys):
    path, tensors = truncated_sample_config
    assert main(["sample", str(path)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = next(x for x in err.splitlines() if x.startswith("qvgen-eval: error: "))
    assert f"{tensors}:" in line and "truncated" in line


def test_debug_shows_the_traceback(truncated_sample_config):
    path, _ = truncated_sample_config
    with pytest.raises(ValueError, match="truncated"):
        main(["--debug", "sample", str(path)])
