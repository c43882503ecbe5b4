"""The run's outputs: the trained fake-quant student and its real low-bit (deploy) form.

`final/fake_quant/`: `model.safetensors` (the student's state dict: latent weights, weight scales and zero
points, activation clip logits, every high-precision tensor; Φ is gone) and `student_manifest.json`
(`StudentManifest`: family, checkpoint, quant config, layer roles, versions, the resolved run config). It
is rebuilt by `load_student`: load the family's transformer, `prepare_` with the recorded config, load
the tensors strictly.
`final/deploy/`: `qvgen.quant.convert_` + `save_quantized` (packed int4, qvgen-quant's deploy manifest).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from qvgen import quant
from qvgen.models import get_family

STUDENT_MANIFEST = "student_manifest.json"
STUDENT_TENSORS = "model.safetensors"


class StudentManifest(BaseModel):
    """What rebuilds a fake-quant student from its base checkpoint."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    kind: Literal["fake_quant"] = "fake_quant"
    family: str
    checkpoint: str
    """Absolute path of the base diffusers folder (VAE, text encoder, tokenizer, scheduler, fp transformer)."""
    quant: dict[str, Any]
    """The `qvgen.quant.QuantConfig` the student was prepared with (JSON mode)."""
    layers: dict[str, str]
    """Quantized module name → `LayerRole`."""
    steps: int
    qvgen_train_version: str
    git_sha: str | None
    run_config: dict[str, Any]


def _git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True,
            cwd=Path(__file__).parent,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def save_student(student: nn.Module, cfg: Any, out_dir: Path) -> Path:
    """Write the fake-quant student folder atomically (assembled in `<out_dir>.tmp`, then renamed)."""
    layers = quant.quantized_layers(student)
    with_phi = sorted(name for name, layer in layers.items() if layer.lowrank is not None)
    if with_phi:
        raise ValueError(
            f"save_student: Φ is still attached to {with_phi[:3]}...; finish the rank decay first"
        )
    manifest = StudentManifest(
        family=cfg.model.family,
        checkpoint=str(Path(cfg.model.checkpoint).resolve()),
        quant=cfg.quant.model_dump(mode="json"),
        layers={name: str(layer.role) for name, layer in layers.items()},
        steps=cfg.train.max_steps,
        qvgen_train_version=importlib.metadata.version("qvgen-train"),
        git_sha=_git_sha(),
        run_config=cfg.model_dump(mode="json"),
    )
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in student.state_dict().items()}
    save_file(tensors, str(tmp / STUDENT_TENSORS), metadata={"format": "pt"})
    (tmp / STUDENT_MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return out_dir


def load_student(directory: str | Path) -> nn.Module:
    """Rebuild a fake-quant student written by `save_student` (float32, eval mode)."""
    directory = Path(directory)
    path = directory / STUDENT_MANIFEST
    try:
        manifest = StudentManifest.model_validate_json(path.read_text())
    except OSError as e:
        raise FileNotFoundError(f"{path}: no student manifest here: {e.strerror or e}") from e
    except (ValidationError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: invalid student manifest: {e}") from e
    family = get_family(manifest.family)
    model = family.load_transformer(manifest.checkpoint, dtype="float32")
    quant.prepare_(
        model,
        quant.QuantConfig.model_validate(manifest.quant),
        layer_roles=family.layer_roles,
        keep_high_precision=family.keep_high_precision,
    )
    if set(quant.quantized_layers(model)) != set(manifest.layers):
        raise ValueError(f"{path}: the quantized layers of the rebuilt model differ from the manifest's")
    try:
        tensors = load_file(str(directory / STUDENT_TENSORS))
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{directory / STUDENT_TENSORS}: cannot read the student tensors ({e})") from e
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{directory / STUDENT_TENSORS}: tensors do not fit the rebuilt student: {e}") from e
    return model.eval()


def export_student(student: nn.Module, cfg: Any) -> tuple[Path | None, Path | None]:
    """Write `final/fake_quant` and/or `final/deploy` (convert_ runs in place: call it last)."""
    final = Path(cfg.output_dir) / "final"
    final.mkdir(parents=True, exist_ok=True)
    fake_dir = save_student(student, cfg, final / "fake_quant") if cfg.export.fake_quant else None
    deploy_dir = None
    if cfg.export.deploy:
        student = student.cpu().eval()
        quant.convert_(student)
        deploy_dir = final / "deploy"
        quant.save_quantized(student, deploy_dir, identity=str(Path(cfg.model.checkpoint).resolve()))
    return fake_dir, deploy_dir
