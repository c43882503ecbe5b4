"""The run's outputs: the trained fake-quant student and its real low-bit (deploy) form.

`final/fake_quant/`: `qvgen.models.save_student` (`model.safetensors`: latent weights, weight scales and
zero points, activation clip logits, every high-precision tensor, Φ gone; `student_manifest.json`: family,
checkpoint, quant config, layer roles, versions, the resolved run config). `qvgen.models.load_student`
rebuilds it.
`final/deploy/`: `qvgen.quant.convert_` + `save_quantized` (packed int4, qvgen-quant's deploy manifest).
"""

from __future__ import annotations

import importlib.metadata
import subprocess
from pathlib import Path

from torch import nn

from qvgen import quant
from qvgen.core import Provenance, canonical_digest
from qvgen.models import read_student_manifest, save_student
from qvgen.train.config import RunConfig


def _git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True,
            cwd=Path(__file__).parent,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def transformer_checkpoint(cfg: RunConfig) -> Path:
    """The folder the run's transformer loads from: `model.checkpoint`, or its `<expert>/` subfolder for a
    one-expert run of a Wan 2.2 A14B folder (`cfg.expert`)."""
    if cfg.model.checkpoint is None:
        raise ValueError("model.checkpoint: set the local diffusers folder the student was quantized from")
    root = Path(cfg.model.checkpoint)
    if cfg.expert == "both":
        raise ValueError("expert='both' has one transformer per sub-run; pass a one-expert config")
    return root if cfg.expert is None else root / cfg.expert


def export_student(student: nn.Module, cfg: RunConfig) -> tuple[Path | None, Path | None]:
    """Write `final/fake_quant` and/or `final/deploy` (convert_ runs in place: call it last)."""
    checkpoint = transformer_checkpoint(cfg)
    final = Path(cfg.output_dir) / "final"  # created by the writers below: an empty final/ means no export
    version, git_sha = importlib.metadata.version("qvgen-train"), _git_sha()
    facts = {
        "run_config": canonical_digest(cfg),
        "checkpoint": str(checkpoint.resolve()),
        "steps": cfg.train.max_steps,
        "qvgen_train_version": version,
        "git_sha": git_sha or "",
    }  # what produced the exports; the manifests are sealed with it (issue 32)
    fake_dir = None
    if cfg.export.fake_quant:
        fake_dir = save_student(
            student,
            final / "fake_quant",
            family=cfg.model.family,
            checkpoint=checkpoint,
            quant_config=cfg.quant,
            steps=cfg.train.max_steps,
            qvgen_train_version=version,
            git_sha=git_sha,
            run_config=cfg.model_dump(mode="json"),
            provenance=Provenance.of("qvgen-train run", facts),
        )
        facts["student_manifest_digest"] = read_student_manifest(fake_dir).digest or ""
    deploy_dir = None
    if cfg.export.deploy:
        student = student.cpu().eval()
        # weight-only configs (activation.kind 'none') can only become w4a16 deploy layers
        target: quant.DeployTarget = (
            "w4a16" if isinstance(cfg.quant.activation, quant.NoActivationQuant) else "w4a4"
        )
        quant.convert_(student, target=target)
        deploy_dir = final / "deploy"
        quant.save_quantized(
            student,
            deploy_dir,
            identity=str(checkpoint.resolve()),
            provenance=Provenance.of("qvgen-train run", facts),
        )
    return fake_dir, deploy_dir
