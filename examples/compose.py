"""Compose QVGen yourself: prepare_ → initialize_ → attach Φ → your own training loop → convert_ → save → load.

    python examples/compose.py BASE_DIR DEPLOY_DIR    # BASE_DIR: a local Wan 2.1 diffusers folder

The lines between the markers are the whole recipe; the loop is yours (here: random latents and text
embeddings, distilling the full-precision teacher's prediction, no data pipeline). `qvgen-train run` is the
full version (shards, accelerate, checkpoints, validation). Tested by tests/integration/test_compose_example.py.
"""

from __future__ import annotations

import sys

import torch

from qvgen import auxiliary as aux
from qvgen import quant
from qvgen.models import get_family, load_pipeline


def main(base: str, deploy: str, batch: int = 2) -> object:
    fam = get_family("wan")
    teacher, student = fam.load_transformer(base), fam.load_transformer(base).train()
    c = student.config
    latents, text = torch.randn(batch, c.in_channels, 3, 8, 8), torch.randn(batch, 16, c.text_dim)
    # --- the recipe ----------------------------------------------------------------------------------
    quant.prepare_(student, quant.QuantConfig.w4a4(), layer_roles=fam.layer_roles)  # W4A4 fake quant
    quant.initialize_(student, progress=False)  # weight ranges from the float weights
    cfg = aux.AuxConfig(decay=aux.DecaySchedule(initial_rank=4, period=2))
    branches = aux.attach_(student, cfg)  # Φ = SVD_r(W − Q(W)) on every QuantLinear
    optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=1e-4)
    for step in range(aux.required_steps(cfg.decay)):  # your loop; Φ is gone after the last step
        aux.apply_(branches, aux.rank_at(step, cfg.decay), optimizer)  # rank decay, before the forward
        x = fam.noised_inputs(latents, torch.randn_like(latents), fam.sample_timesteps(batch))
        with torch.no_grad():
            target = fam.predict(teacher, x, text)
        torch.nn.functional.mse_loss(fam.predict(student, x, text), target).backward()
        optimizer.step()
        optimizer.zero_grad()
    quant.convert_(student)  # packed int4 weights, integer GEMMs
    quant.save_quantized(student, deploy, identity=base)
    return load_pipeline(base, deploy)  # the stock WanPipeline with the W4A4 transformer
    # -------------------------------------------------------------------------------------------------


if __name__ == "__main__":
    pipe = main(sys.argv[1], sys.argv[2])
    print(f"{type(pipe).__name__} with {type(pipe.transformer).__name__} from {sys.argv[2]}")
