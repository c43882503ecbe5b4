"""The teacher's MODEL_CARD.md, written from its training report, and the command that retrains it."""

from __future__ import annotations

import json
from typing import Any

from qvgen.data import COLOURS, SHAPE_SETS
from qvgen.demo.teacher_config import REPORT_NAME, TeacherConfig, report_config

_ROW_KEYS = ("colour", "shape", "motion", "overall")


def retrain_command(cfg: dict[str, Any]) -> str:
    """The `qvgen train-teacher` command line that reproduces a run of config `cfg` (a JSON dump)."""
    defaults = json.loads(TeacherConfig().model_dump_json())
    args = []
    for key, value in report_config(cfg).items():
        if key in {"out", "work_dir"} or value == defaults[key]:
            continue
        args.append(f"--set {key}={json.dumps(value, separators=(',', ':'))}")
    return " ".join(["qvgen train-teacher --out DIR", *args])


def _rows(name: str, scores: dict[str, Any]) -> list[str]:
    """Table rows for one set of videos: all, and one-/two-object captions when present."""
    out = []
    for part, label in (("all", "all"), ("one_object", "one object"), ("two_object", "two objects")):
        if part in scores:
            s = scores[part]
            out.append(f"| {name} | {label} | " + " | ".join(f"{s[k]:.3f}" for k in _ROW_KEYS) + " |")
    return out


def _vae_steps(report: dict[str, Any]) -> tuple[str, str]:
    """Steps 1 (VAE) and 4 (decoder) of the card's recipe: trained here, or taken from another teacher."""
    cfg, vae = report["config"], report["vae"]
    if "from" in vae:
        if "source_config" in vae:  # recomputed: a stored command line would go stale when defaults change
            command = retrain_command(vae["source_config"])
        else:
            command = vae.get("source_retrain_command", "(that folder has no training report)")
        took = f", trained there in {vae['source_seconds']:.0f} s" if vae.get("source_seconds") else ""
        return (
            f"1. VAE: the one of `{vae['from']}` (vae/ weights sha256 {vae['sha256'][:12]}{took}), used as it\n"
            f"   is, its latent statistics included (`vae_from`); that teacher was trained by `{command}`.\n",
            "4. No decoder phase: the borrowed VAE's decoder had its own.",
        )
    finetune = vae.get("clips_finetune", {"steps": 0})
    decoder = vae.get("decoder", {"steps": 0})
    return (
        f"""1. VAE, AdamW with one one-cycle schedule per stage, {cfg["vae_crop"]}×{cfg["vae_crop"]} crops of
   {cfg["vae_clips"]} clips (three in four centred near an object): {vae["images"]["steps"]} steps on
   single frames (batch {cfg["vae_image_batch_size"]}, peak lr {cfg["vae_lr"]}), then {vae["clips"]["steps"]}
   steps on whole clips (batch {cfg["vae_batch_size"]}, peak lr {cfg["vae_clip_lr"]}); loss L1 + L2 with
   object pixels weighted ×{1 + cfg["vae_shape_weight"]:g}, KL weight {cfg["vae_kl_weight"]:g}; then
   {finetune["steps"]} more whole-clip steps with a fresh optimizer (peak lr {cfg["vae_finetune_lr"]}). Its
   per-channel latent mean/std were then written into `vae/config.json` (`latents_mean`, `latents_std`).
""",
        f"""4. The VAE decoder alone (encoder, latents and statistics unchanged): {decoder["steps"]} whole-clip steps,
   peak lr {cfg["vae_decoder_lr"]}, object-boundary pixels weighted ×{1 + cfg["vae_edge_weight"]:g} on top.""",
    )


def _text_step(report: dict[str, Any]) -> tuple[str, str]:
    """How the card describes the UMT5, and step 0 of its recipe (empty when the encoder stayed random)."""
    cfg, log = report["config"], report.get("text_encoder") or {"steps": 0}
    if not log["steps"]:
        return "a randomly initialised, frozen 2-layer UMT5", ""
    acc = log["accuracy"]
    return (
        f"a 2-layer UMT5 (randomly initialised, taught which clause says what in {log['steps']} steps, then frozen)",
        f"""0. Text encoder (`qvgen.demo.text_training`; a stand-in for a pretrained UMT5): {log["steps"]} AdamW steps
   (lr {cfg["text_lr"]}, batch {cfg["text_batch_size"]} random captions of the world's grammar) of the UMT5
   together with six attention readers, one per (clause, attribute), that classify colour, shape and
   direction of clause 1 and clause 2 from its padded-and-zeroed output; only the encoder is kept. The
   readers' accuracy on fresh captions: {acc["all"]:.3f} overall, clause-2 colour {acc["clause2_colour"]:.3f}.
""",
    )


def model_card(report: dict[str, Any]) -> str:
    """MODEL_CARD.md text from a training report: recipe, wall time, retrain command, measured quality."""
    q, cfg, t = report["quality"], report["config"], report["timings_s"]
    tr = report["transformer"]
    chance = q["chance"]
    quality = "\n".join(
        [*_rows("teacher samples", q["teacher"]), *_rows("ground truth", q["ground_truth"]),
         *_rows("VAE reconstruction", q["vae_reconstruction"])]
    )  # fmt: skip
    sweep = "\n".join(row for g, s in q["teacher_by_guidance"].items() for row in _rows(f"CFG {g}", s))
    ph = report.get("phase_seconds") or {}
    secs: dict[str, float] = {
        k: float(ph[k] if ph.get(k) is not None else t.get(f"{k}_s", 0.0))
        for k in ("text", "vae", "shards", "transformer", "decoder", "eval")
    }
    total_min = sum(secs.values()) / 60
    vae_step, decoder_step = _vae_steps(report)
    text_encoder, text_step = _text_step(report)
    text_time = f"text encoder {secs['text']:.0f} s, " if text_step else ""
    stage2 = tr.get("stage2", {"steps": 0})["steps"]
    stage2_step = (
        f"""   Then {stage2} more steps from those weights (fresh AdamW at lr
   {cfg["finetune_lr"]}, fresh EMA and batch order) with σ drawn at shift {cfg["finetune_flow_shift"]:g}, the
   sampler's, so more of them at high noise, where a sample's layout and motion are decided.
"""
        if stage2
        else ""
    )
    borrowed_s = float(report["vae"].get("source_seconds") or 0.0) if "from" in report["vae"] else 0.0
    borrowed = f"; the borrowed VAE took another {borrowed_s / 60:.1f} min, once" if borrowed_s else ""
    note = (
        " (the quality check re-run on the saved weights by `qvgen train-teacher --evaluate-only`)"
        if report.get("evaluated_separately")
        else ""
    )
    n_one, n_two = cfg["eval_one_object"], cfg["eval_two_object"]
    return f"""# tiny_wan_teacher — a tiny Wan 2.1 text-to-video model of qvgen's procedural world

A diffusers folder for `WanPipeline` (WanTransformer3DModel, AutoencoderKLWan, UMT5EncoderModel, the
offline T5 tokenizer, UniPC flow scheduler) trained on {cfg["frames"]}-frame {cfg["height"]}×{cfg["width"]}
clips of qvgen.data's procedural world: one or two shapes ({", ".join(SHAPE_SETS[cfg.get("shapes", "outline")])}) in {len(COLOURS)}
colours moving left, right, up or down over a {cfg.get("background", "textured")} background, captioned
"a <colour> <shape> moves <direction> [and a …]". Load it with `qvgen.models.get_family("wan").load(path)`.

Sizes: the transformer is qvgen.models' tiny Wan (hidden {64 * cfg.get("num_heads", 2)} = {cfg.get("num_heads", 2)} heads × 64, text dim 64) with
{cfg.get("num_layers", 2)} blocks, FFN {cfg.get("ffn_dim", 256)} and spatial patch {cfg["patch_size"]}; objects have radii of
{cfg.get("radius_fraction", [0.12, 0.17])} × the frame size; the VAE is an `AutoencoderKLWan(base_dim=8, z_dim={cfg.get("vae_z_dim", 16)},
dim_mult=[1, 2, 2], num_res_blocks=1, temperal_downsample=[True, True])` with 4× spatial and 4× temporal
compression (a {cfg["frames"]}×{cfg["height"]}×{cfg["width"]} clip → a {cfg.get("vae_z_dim", 16)}×3×{cfg["height"] // 4}×{cfg["width"] // 4}
latent); the text encoder is {text_encoder} reading prompts of
{cfg.get("text_length", 16)} tokens.

## How it was trained (`qvgen.demo.teacher.train_teacher`)

{text_step}{vae_step}2. The frozen VAE and UMT5 encoded {cfg["num_clips"]} clips of world seed {cfg["world_seed"]} (1 to
   {cfg["max_objects"]} objects each), rendered in memory, into qvgen.data latent shards (`{report["encoder"]}`).
3. Transformer ({tr["steps"]} steps, batch {cfg["batch_size"]}, AdamW lr {cfg["lr"]}, {cfg["warmup_steps"]}
   warm-up steps then cosine to 5 %): Wan flow matching, x_t = (1−σ)·x0 + σ·ε, target ε − x0, σ uniform
   over the 1000 training sigmas (shift {cfg["train_flow_shift"]:g}), posterior-sampled latents, captions
   dropped to the empty prompt with p = {cfg["caption_dropout"]}; the EMA ({cfg["ema_decay"]}) weights were kept.
{stage2_step}{decoder_step}

Wall time of each phase on the shared 2-core CPU (other jobs running beside it), 1 torch thread: {text_time}VAE
{secs["vae"]:.0f} s, shards {secs["shards"]:.0f} s, transformer {secs["transformer"]:.0f} s, decoder
{secs["decoder"]:.0f} s, evaluation {secs["eval"]:.0f} s, total {total_min:.1f} min{borrowed} (torch
{report["versions"]["torch"]}). A run with these step counts is bitwise reproducible at 1 thread.

Retrain (`--out` elsewhere; writing the embedded folder needs `--overwrite-embedded` instead):

```
{retrain_command(cfg)}
```

## Quality (prompt adherence, `qvgen.eval`)

Held-out captions: {n_one} one-object and {n_two} two-object clips of world seed {cfg["eval_seed"]} (never
trained on); the teacher samples each caption with {cfg["eval_sample_seeds"]} noise seeds,
{cfg["num_inference_steps"]} UniPC steps, CFG {cfg["guidance_scale"]}. References: the same clips (ground
truth) and their VAE reconstructions (PSNR {q["vae_psnr_db"]:.2f} dB).

| videos | captions | colour | shape | motion | overall |
| --- | --- | --- | --- | --- | --- |
{quality}
| chance (random object) | — | {chance["colour"]:.3f} | {chance["shape"]:.3f} | {chance["motion"]:.3f} | — |

Teacher samples of the same captions and seeds at other guidance scales:

| guidance | captions | colour | shape | motion | overall |
| --- | --- | --- | --- | --- | --- |
{sweep}

Every number above comes from `{REPORT_NAME}` in this folder, written by the training run{note}.

## Config (`TeacherConfig`; `out` and `work_dir` left out)

```json
{json.dumps({k: v for k, v in cfg.items() if k not in {"out", "work_dir"}}, indent=1)}
```
"""
