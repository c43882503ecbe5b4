"""Loading the on-disk forms eval reads: the fake-quant student folder and qvgen-quant's deploy folder."""

import copy
import json

import pytest
import torch

from qvgen import quant
from qvgen.eval import DeployModel, FakeQuantModel, load_model
from qvgen.models import get_family, save_student
from qvgen.models.testing import tiny_checkpoint


@pytest.fixture(scope="module")
def student_dirs(tmp_path_factory):
    fam = get_family("wan")
    ckpt = tiny_checkpoint("wan")
    cfg = quant.QuantConfig()
    student = fam.load_transformer(ckpt)
    layers = quant.prepare_(student, cfg, layer_roles=fam.layer_roles)
    quant.initialize_(student, progress=False)
    with torch.no_grad():  # make the student differ from a fresh prepare_ + initialize_
        for layer in layers.values():
            layer.act_quantizer.clip_logit_hi.add_(torch.linspace(-1, 1, layer.act_quantizer.groups))
    root = tmp_path_factory.mktemp("students")
    fake = save_student(student, root / "fake", family="wan", checkpoint=ckpt, quant_config=cfg)
    deployed = copy.deepcopy(student)
    quant.convert_(deployed)
    quant.save_quantized(deployed, root / "deploy", identity=str(ckpt))
    return student.eval(), fake, root / "deploy"


def _forward(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 16, 3, 4, 4, generator=g)
    text = torch.randn(2, 16, 64, generator=g)
    t = torch.tensor([999.0, 420.0])
    with torch.no_grad():
        return model(hidden_states=x, timestep=t, encoder_hidden_states=text, return_dict=False)[0]


def test_fake_quant_student_loads_exactly_with_its_timestep_context(student_dirs):
    student, fake, _ = student_dirs
    loaded = load_model("wan", FakeQuantModel(path=fake), "float32", torch.device("cpu"))
    transformer = loaded.components.transformer
    assert quant.timestep_context(transformer) is not None
    assert set(quant.quantized_layers(transformer)) == set(quant.quantized_layers(student))
    assert torch.equal(_forward(transformer), _forward(student))


def test_deploy_export_loads_and_tracks_the_fake_quant_student(student_dirs):
    student, _, deploy = student_dirs
    loaded = load_model("wan", DeployModel(path=deploy), "float32", torch.device("cpu"))
    out, ref = _forward(loaded.components.transformer), _forward(student)
    assert not quant.quantized_layers(loaded.components.transformer)
    assert ((out - ref).norm() / ref.norm()).item() < 1e-3


def test_student_of_another_family_is_refused_naming_the_manifest(student_dirs):
    _, fake, _ = student_dirs
    with pytest.raises(ValueError, match=r"student_manifest\.json: a 'wan' student"):
        load_model("cogvideox", FakeQuantModel(path=fake), "float32", torch.device("cpu"))


def test_missing_student_manifest_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"student_manifest\.json"):
        load_model("wan", FakeQuantModel(path=tmp_path), "float32", torch.device("cpu"))


def test_deploy_without_a_local_base_asks_for_one(student_dirs, tmp_path):
    from qvgen.core import seal_manifest

    _, _, deploy = student_dirs
    moved = tmp_path / "deploy"
    moved.mkdir()
    for f in deploy.iterdir():
        (moved / f.name).write_bytes(f.read_bytes())
    data = json.loads((moved / "quant_manifest.json").read_text())
    data["source"]["identity"] = "run-42"  # sealed again: an unsealed edit is refused first (issue 32)
    (moved / "quant_manifest.json").write_text(json.dumps(seal_manifest(data)))
    with pytest.raises(FileNotFoundError, match="set `base`"):
        load_model("wan", DeployModel(path=moved), "float32", torch.device("cpu"))
    loaded = load_model(
        "wan", DeployModel(path=moved, base=tiny_checkpoint("wan")), "float32", torch.device("cpu")
    )
    assert loaded.family.name == "wan"
