"""Issue 32's fault scenarios, each run for real as a user would hit it (the `reliability2` line).

Every scenario drives the public command in a subprocess (`python -m qvgen.entrypoints.<cli>`) or the public
function, on the tiny offline models, and checks what a user would see (exit code, the one line on stderr)
and what must survive (the files a user wrote, the previous checkpoint or export). Imported and run by
`benchmarks/reliability.py`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save_file

from qvgen import quant
from qvgen.core.testing import default_sigint, fill_filesystem, small_filesystem
from qvgen.models import get_family, load_student
from qvgen.models.testing import tiny_checkpoint

TRAIN = [sys.executable, "-m", "qvgen.entrypoints.qvgen_train"]
EVAL = [sys.executable, "-m", "qvgen.entrypoints.qvgen_eval"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}

Scenario = tuple[bool, str]


def sh(cmd: list[str], timeout: float = 600, **kw: Any) -> subprocess.CompletedProcess[str]:
    """Run a command, capture its output (text)."""
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=kw.pop("env", ENV), **kw)


def err_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    """The non-empty stderr lines of a finished command."""
    return [x for x in proc.stderr.splitlines() if x.strip()]


def one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> bool:
    """Exit non-zero, no traceback, and an error line that holds every needle."""
    lines = err_lines(proc)
    errors = [x for x in lines if ": error:" in x]
    return (
        proc.returncode != 0
        and not any("Traceback" in x for x in lines)
        and len(errors) == 1
        and all(n in errors[0] for n in needles)
    )


def tree_digest(folder: Path) -> str:
    """sha256 over every file's relative path, bytes and mtime (what 'unchanged' means here)."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode())
            h.update(p.read_bytes())
            h.update(str(p.stat().st_mtime_ns).encode())
    return h.hexdigest()


def first_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [x for x in err_lines(proc) if ": error:" in x or "interrupted" in x]
    return (lines or err_lines(proc) or ["<no stderr>"])[-1][:160]


# ------------------------------------------------------------------------------------ import-reference


def reference_checkpoint(work: Path, bits: int = 4) -> tuple[Path, Path]:
    """(tiny Wan base folder, a reference-format W`bits` checkpoint of its transformer)."""
    from qvgen.train.testing import write_reference_checkpoint

    base = tiny_checkpoint("wan")
    transformer = get_family("wan").load_transformer(base, dtype="float32")
    return base, write_reference_checkpoint(
        transformer, work / f"ref-w{bits}" / "transformer", bits=bits, seed=1
    )


def import_out_guard(work: Path) -> Scenario:
    """Item 1: --out holding a user's files, and --out equal to --base, are refused with nothing deleted."""
    base, ref = reference_checkpoint(work)
    user = work / "mine"
    (user / "sub").mkdir(parents=True)
    (user / "notes.txt").write_text("my notes")
    (user / "sub" / "important.bin").write_bytes(os.urandom(64))
    before = tree_digest(user)
    into_user = sh([*TRAIN, "import-reference", str(ref), "--base", str(base), "--out", str(user)])
    user_kept = tree_digest(user) == before

    base_copy = work / "base"
    shutil.copytree(base, base_copy)
    base_before = tree_digest(base_copy)
    onto_base = sh([*TRAIN, "import-reference", str(ref), "--base", str(base_copy), "--out", str(base_copy)])
    base_kept = tree_digest(base_copy) == base_before

    fresh = sh([*TRAIN, "import-reference", str(ref), "--base", str(base), "--out", str(work / "new")])
    ok = (
        one_line_error(into_user, str(user))
        and user_kept
        and one_line_error(onto_base)
        and base_kept
        and fresh.returncode == 0
    )
    return ok, (
        f"folder with notes.txt + sub/important.bin: exit {into_user.returncode}, kept {user_kept} "
        f"({first_line(into_user)!r}); --out = --base: exit {onto_base.returncode}, base kept {base_kept}; "
        f"a new folder: exit {fresh.returncode}"
    )


def import_checks_codes(work: Path) -> Scenario:
    """Item 10: widths that contradict the codes, NaN scale, NaN clip logit, negative scale: each refused."""
    base, ref = reference_checkpoint(work)
    tensors = load_file(str(ref / "diffusion_pytorch_model.safetensors"))
    scale_key = next(k for k in tensors if k.endswith("wquantizer.scale"))
    clip_key = next(k for k in tensors if k.endswith("aquantizer.lower"))

    def edited(name: str, edit: Callable[[dict[str, torch.Tensor]], None]) -> Path:
        folder = work / name / "transformer"
        folder.mkdir(parents=True)
        copy = {k: v.clone() for k, v in tensors.items()}
        edit(copy)
        save_file(copy, str(folder / "diffusion_pytorch_model.safetensors"), metadata={"format": "pt"})
        shutil.copy(ref / "config.json", folder / "config.json")
        return folder

    def nan_scale(t: dict[str, torch.Tensor]) -> None:
        t[scale_key][0, 0] = float("nan")

    def nan_clip(t: dict[str, torch.Tensor]) -> None:
        t[clip_key][7] = float("nan")

    def negative_scale(t: dict[str, torch.Tensor]) -> None:
        t[scale_key][1, 0] = -t[scale_key][1, 0]

    cases = {
        "--weight-bits 8": (ref, ["--weight-bits", "8"], "8"),
        "--weight-bits 3 --act-bits 8": (ref, ["--weight-bits", "3", "--act-bits", "8"], "3"),
        "NaN scale": (edited("nan-scale", nan_scale), [], scale_key),
        "NaN clip logit": (edited("nan-clip", nan_clip), [], clip_key),
        "negative scale": (edited("neg-scale", negative_scale), [], scale_key),
    }
    results = {}
    for i, (name, (folder, flags, needle)) in enumerate(cases.items()):
        proc = sh(
            [
                *TRAIN,
                "import-reference",
                str(folder),
                "--base",
                str(base),
                "--out",
                str(work / f"o{i}"),
                *flags,
            ]
        )
        results[name] = one_line_error(proc, needle)
    ok = all(results.values())
    return ok, ", ".join(f"{k}: {'refused' if v else 'ACCEPTED'}" for k, v in results.items())


def reference_replay(work: Path) -> tuple[bool, str, int, int]:
    """Item 10: a 50-step CFG sampling of an imported reference checkpoint in `reference` mode: how many of
    its transformer calls use the clip group the reference's own `--fix` sampling uses."""
    from qvgen.train import import_reference

    base, ref = reference_checkpoint(work)
    student = load_student(import_reference(ref, base, work / "student", groups="reference"))
    fam = get_family("wan")
    components = dataclasses.replace(fam.load(base), transformer=student)
    kwargs = fam.sample_kwargs(
        components, prompt="a red square", negative_prompt="blur", height=16, width=16, num_frames=1,
        num_inference_steps=50, guidance_scale=5.0, generator=torch.Generator().manual_seed(0),
        output_type="latent",
    )  # fmt: skip
    with torch.no_grad(), quant.record_call_groups(student) as got:
        fam.pipeline(components)(**kwargs)
    want = quant.reference_call_groups(50, groups=50, cfg=True, fix=True)
    matched = sum(g == w for g, w in zip(got, want, strict=False))
    total = max(len(got), len(want))
    return (
        matched == total,
        f"{matched}/{total} calls use the reference's group (first {got[:4]})",
        matched,
        total,
    )


# ------------------------------------------------------------------------------------ train run folders


def tiny_shards(work: Path) -> Path:
    """Eight tiny-Wan samples in two shards under `work/shards`, written by the public shard writer."""
    from qvgen.data import EncodedSample, WriterConfig, write_shards

    g = torch.Generator().manual_seed(0)
    samples = [
        EncodedSample(
            id=f"s{i}", caption=f"clip {i}", latents_mean=torch.randn(16, 3, 8, 8, generator=g),
            latents_logvar=torch.full((16, 3, 8, 8), -3.0), text_embeddings=torch.randn(16, 64, generator=g),
            text_length=4 + i % 8, video_shape=(9, 64, 64),
        )
        for i in range(8)
    ]  # fmt: skip
    cfg = WriterConfig(samples_per_shard=4, family="wan", latent_dtype="float32", text_dtype="float32")
    write_shards(samples, work / "shards", cfg, encoder_name="bench-wan")
    return work / "shards"


def run_dict(shards: Path, out: str | Path, **sections: Any) -> dict[str, Any]:
    """A tiny QVGen run config (W4A4, Φ r0 = 4 decaying every 2 steps, 7 steps); `sections` update it."""
    cfg: dict[str, Any] = {
        "model": {"family": "wan", "checkpoint": str(tiny_checkpoint("wan")), "dtype": "float32"},
        "aux": {"decay": {"initial_rank": 4, "period": 2}},
        "data": {"shards": str(shards), "batch_size": 2, "num_workers": 0, "shuffle_buffer": 4},
        "train": {"max_steps": 7, "caption_dropout": 0.0, "seed": 3},
        "logging": {"progress_bar": False},
        "checkpoint": {"every_n_steps": None},
        "output_dir": str(out),
    }
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return cfg


def run_yaml(work: Path, shards: Path, out: str | Path, name: str = "run.yaml", **sections: Any) -> Path:
    """`run_dict` (fake-quant export only) written to `work/name`."""
    path = work / name
    path.write_text(
        yaml.safe_dump(run_dict(shards, out, **{"export": {"fake_quant": True, "deploy": False}, **sections}))
    )
    return path


def strict_config(work: Path, shards: Path) -> Scenario:
    """Item 8: `caption_dropout: yes`, `--set train.max_steps=yes`, a duplicate key: each refused naming it."""
    ok_cfg = run_yaml(work, shards, work / "out")
    text = ok_cfg.read_text()
    yes = work / "yes.yaml"
    yes.write_text(text.replace("caption_dropout: 0.0", "caption_dropout: yes"))
    dup = work / "dup.yaml"
    dup.write_text(text.replace("  max_steps: 7", "  max_steps: 7\n  max_steps: 50"))
    cases = {
        "caption_dropout: yes": (sh([*TRAIN, "run", str(yes), "--dry-run"]), "caption_dropout"),
        "--set train.max_steps=yes": (
            sh([*TRAIN, "run", str(ok_cfg), "--set", "train.max_steps=yes", "--dry-run"]),
            "max_steps",
        ),
        "duplicate max_steps": (sh([*TRAIN, "run", str(dup), "--dry-run"]), "duplicate key 'max_steps'"),
    }
    results = {
        k: p.returncode != 0 and needle in p.stderr and "Traceback" not in p.stderr
        for k, (p, needle) in cases.items()
    }
    fine = sh([*TRAIN, "run", str(ok_cfg), "--dry-run"])
    ok = all(results.values()) and fine.returncode == 0
    return ok, ", ".join(f"{k}: {'refused' if v else 'ACCEPTED'}" for k, v in results.items()) + (
        f"; the valid file: exit {fine.returncode}"
    )


def tilde_expanded(work: Path, shards: Path) -> Scenario:
    """Item 8: `output_dir: ~/x` puts the whole run (metrics, final/) under $HOME/x, nothing in ./~."""
    home = work / "home"
    home.mkdir()
    cfg = run_yaml(work, shards, "~/x", train={"max_steps": 2}, aux=None)
    proc = sh([*TRAIN, "run", str(cfg)], env={**ENV, "HOME": str(home)}, cwd=work)
    run_dir = home / "x"
    ok = (
        proc.returncode == 0
        and (run_dir / "metrics.jsonl").is_file()
        and (run_dir / "final" / "fake_quant").is_dir()
        and not (work / "~").exists()
    )
    return (
        ok,
        f"exit {proc.returncode}; metrics and final/ under $HOME/x: {ok}; ./~ created: {(work / '~').exists()}",
    )


def finished_run_guard(work: Path, shards: Path) -> Scenario:
    """Item 7: a new run into a finished run's folder (no checkpoints) is refused; its metrics and final/ stay."""
    out = work / "run"
    cfg = run_yaml(work, shards, out, train={"max_steps": 2}, aux=None)
    first = sh([*TRAIN, "run", str(cfg)])
    before = tree_digest(out)
    again = sh([*TRAIN, "run", str(cfg)])
    changed = run_yaml(work, shards, out, name="changed.yaml", train={"max_steps": 3, "seed": 9}, aux=None)
    other = sh([*TRAIN, "run", str(changed)])
    kept = tree_digest(out) == before
    ok = first.returncode == 0 and one_line_error(again) and one_line_error(other) and kept
    return (
        ok,
        f"same config: exit {again.returncode} ({first_line(again)!r}); changed config: exit {other.returncode}; folder unchanged {kept}",
    )


def torn_metrics_resumes(work: Path, shards: Path) -> Scenario:
    """Item 6: a run killed while writing metrics (its last checkpoint never written, the last metrics line
    torn) resumes: the torn line is dropped with a warning, every step logged once."""
    out = work / "run"
    cfg = run_yaml(
        work, shards, out, train={"max_steps": 6}, checkpoint={"every_n_steps": 2, "keep_last": 3}, aux=None,
        export={"fake_quant": False, "deploy": False},
    )  # fmt: skip
    first = sh([*TRAIN, "run", str(cfg)])
    shutil.rmtree(
        sorted((out / "checkpoints").glob("step-*"))[-1]
    )  # the kill came before the last checkpoint
    metrics = out / "metrics.jsonl"
    text = metrics.read_text()
    last_step = max(json.loads(x)["step"] for x in text.splitlines())
    metrics.write_text(text[: len(text) - len(text.splitlines()[-1]) // 2 - 1])  # half of the last line
    resumed = sh([*TRAIN, "run", str(cfg), "--set", "checkpoint.resume_from=latest"])
    steps = [json.loads(x).get("step") for x in metrics.read_text().splitlines()]
    logged = [s for s in steps if s is not None]
    warned = "metrics.jsonl" in resumed.stderr and "torn" in resumed.stderr
    once = len(logged) == len(set(logged))
    ok = (
        first.returncode == 0
        and resumed.returncode == 0
        and warned
        and once
        and max(logged, default=0) == last_step
    )
    return ok, (
        f"resume exit {resumed.returncode}, torn line warned {warned}; steps logged once {once} "
        f"(last {max(logged, default=0)})"
    )


def sigint_one_line(work: Path, shards: Path) -> Scenario:
    """Item 9: Ctrl-C (and SIGTERM) in a run: one line saying where to resume, exit 130 / 143."""
    results = []
    for sig, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
        out = work / f"run-{sig.name}"
        cfg = run_yaml(
            work, shards, out, name=f"{sig.name}.yaml", train={"max_steps": 500},
            checkpoint={"every_n_steps": 2, "keep_last": 2}, export={"fake_quant": False, "deploy": False}, aux=None,
        )  # fmt: skip
        proc = subprocess.Popen(
            [*TRAIN, "run", str(cfg)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=ENV,
            preexec_fn=default_sigint,
        )  # fmt: skip
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            ckpts = out / "checkpoints"
            if ckpts.is_dir() and any(p.name.startswith("step-") for p in ckpts.iterdir()):
                break
            time.sleep(0.2)
        time.sleep(1.0)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        lines = [x for x in err.splitlines() if x.strip()]
        last = lines[-1] if lines else ""
        ok = (
            proc.returncode == code
            and not any("Traceback" in x for x in lines)
            and last.startswith("qvgen-train: interrupted at step")
            and "resume" in last
        )
        results.append((sig.name, ok, proc.returncode, last[:140]))
    return all(r[1] for r in results), "; ".join(f"{n}: exit {c}, {last!r}" for n, _, c, last in results)


def real_enospc_one_line(work: Path, shards: Path) -> Scenario:
    """Item 5 (checkpoint half): a run whose output folder lies on a real 64 MiB tmpfs, filled by another
    process once the first checkpoint is complete: the next checkpoint fails as one line naming the path and
    'no space left on device', exit 1; the complete checkpoint stays and verifies."""
    from qvgen.train.checkpoint import verify_checkpoint

    with small_filesystem(64 << 20) as fs:
        out = fs / "run"
        cfg = run_yaml(
            work, shards, out, train={"max_steps": 400}, checkpoint={"every_n_steps": 2, "keep_last": 3},
            aux=None, export={"fake_quant": False, "deploy": False},
        )  # fmt: skip
        proc = subprocess.Popen(
            [*TRAIN, "run", str(cfg)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=ENV
        )
        first = out / "checkpoints" / "step-00000002"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                verify_checkpoint(first)
                break
            except (OSError, ValueError):
                time.sleep(0.1)
        fill_filesystem(fs, leave_bytes=64 << 10)
        _, err = proc.communicate(timeout=300)
        done = subprocess.CompletedProcess(proc.args, proc.returncode, "", err)
        kept = sorted(p.name for p in (out / "checkpoints").iterdir())
        intact = all(verify_checkpoint(out / "checkpoints" / k).step > 0 for k in kept) and bool(kept)
        ok = one_line_error(done, "no space left on device", str(out)) and intact
        return (
            ok,
            f"tmpfs filled after step 2: exit {done.returncode}, {first_line(done)!r}; complete checkpoints {kept} verify {intact}",
        )


# ------------------------------------------------------------------------------------ shards


def stale_shards_refused(work: Path) -> Scenario:
    """Item 2: row 0's caption changed in the captions table, precompute rerun into the same folder: refused
    naming shard, row and caption, shard 0 untouched; `--overwrite` rewrites shard 0 only."""
    import csv

    from qvgen.data import write_procedural_dataset

    captions = write_procedural_dataset(work / "videos", 4, seed=0, frames=9, height=64, width=64)
    cfg = {
        "model": {"family": "wan", "checkpoint": str(tiny_checkpoint("wan")), "dtype": "float32"},
        "ingest": {"captions": str(captions)},
        "writer": {"buckets": [{"frames": 9, "height": 64, "width": 64}], "samples_per_shard": 2},
        "out_dir": str(work / "shards"),
    }
    (work / "pre.yaml").write_text(yaml.safe_dump(cfg))
    first = sh([*TRAIN, "precompute", str(work / "pre.yaml")])
    shards = work / "shards"
    shard0, shard1 = shards / "shard-000000.tar", shards / "shard-000001.tar"

    def state(p: Path) -> tuple[str, int]:
        return hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns

    before0, before1 = state(shard0), state(shard1)
    rows = list(csv.DictReader(captions.read_text().splitlines()))
    rows[0]["caption"] = "a green square moves up"
    with captions.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    rerun = sh([*TRAIN, "precompute", str(work / "pre.yaml")])
    refused = one_line_error(rerun, "shard-000000.tar", "row 0 caption") and state(shard0) == before0
    rebuilt = sh([*TRAIN, "precompute", str(work / "pre.yaml"), "--overwrite"])
    only0 = rebuilt.returncode == 0 and state(shard0) != before0 and state(shard1) == before1
    ok = first.returncode == 0 and refused and only0
    return ok, (
        f"caption of row 0 changed: exit {rerun.returncode}, shard 0 untouched {state(shard0) == before0 or only0} "
        f"({first_line(rerun)!r}); --overwrite: exit {rebuilt.returncode}, only shard 0 rewritten {only0}"
    )


# ------------------------------------------------------------------------------------ manifests and exports

WAN_TINY = {
    "num_layers": 2, "num_attention_heads": 2, "attention_head_dim": 64, "text_dim": 64, "ffn_dim": 256,
    "freq_dim": 256, "rope_max_seq_len": 32, "eps": 1e-6,
}  # fmt: skip
W4A4_G4 = quant.QuantConfig(
    weight=quant.LSQPlusWeight(bits=4), activation=quant.ClippedDynamicActivation(bits=4, groups=4)
)


def tiny_deploy(seed: int) -> torch.nn.Module:
    """A converted (packed int4) tiny Wan transformer with non-trivial clip logits."""
    import diffusers

    torch.manual_seed(seed)
    model = diffusers.WanTransformer3DModel(**WAN_TINY).eval()
    quant.prepare_(model, W4A4_G4)
    quant.initialize_(model, progress=False)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "clip_logit" in name:
                p.uniform_(0.5, 4.0)
    quant.convert_(model)
    return model


def manifest_edit_detected(work: Path) -> Scenario:
    """Item 4: act_bits 4→8 and 4→3, eps, num_train_timesteps, rope_max_seq_len edited in a deploy folder's
    quant_manifest.json: each load refused naming the file and the field. (Re-sealing the edit shows what the
    old loader did: it loaded, and the transformer's output changed.)"""
    from qvgen.core import seal_manifest

    g = torch.Generator().manual_seed(1)
    x = {
        "hidden_states": torch.randn(2, 16, 3, 8, 8, generator=g), "timestep": torch.tensor([120.0, 870.0]),
        "encoder_hidden_states": torch.randn(2, 16, 64, generator=g),
    }  # fmt: skip
    src = work / "deploy"
    model = tiny_deploy(0)
    quant.save_quantized(model, src)
    with torch.no_grad():
        ref = model(**x)[0]
    edits: dict[str, tuple[str, Callable[[dict[str, Any]], None]]] = {
        "act_bits 4→8": ("act_bits", lambda m: [e.update(act_bits=8) for e in m["layers"]]),
        "act_bits 4→3": ("act_bits", lambda m: [e.update(act_bits=3) for e in m["layers"]]),
        "eps": ("eps", lambda m: m["source"]["config"].update(eps=0.1)),
        "num_train_timesteps": ("num_train_timesteps", lambda m: m.update(num_train_timesteps=2000)),
        "rope_max_seq_len": (
            "rope_max_seq_len",
            lambda m: m["source"]["config"].update(rope_max_seq_len=1024),
        ),
    }
    notes, detected = [], 0
    for i, (name, (field, edit)) in enumerate(edits.items()):
        folder = Path(shutil.copytree(src, work / f"edit-{i}"))
        path = folder / "quant_manifest.json"
        raw = json.loads(path.read_text())
        edit(raw)
        path.write_text(json.dumps(seal_manifest(raw)))  # what the old loader saw: an edit it could not tell
        with torch.no_grad():
            changed = not torch.equal(quant.load_quantized(folder)(**x)[0], ref)
        path.write_text(json.dumps(raw))  # the same edit as a user makes it
        try:
            quant.load_quantized(folder)
            notes.append(f"{name}: LOADED")
        except ValueError as e:
            named = str(path) in str(e) and field in str(e) and "\n" not in str(e)
            detected += named
            notes.append(
                f"{name}: refused{'' if named else ' (field not named)'} (old loader: output changed {changed})"
            )
    return detected == len(edits), "; ".join(notes)


def real_enospc_export(work: Path) -> Scenario:
    """Item 5 (export half): a second deploy export onto a real, full 8 MiB tmpfs: one OSError naming the
    folder and 'no space left on device'; the first export stays byte for byte and loads."""
    import errno

    with small_filesystem(8 << 20) as fs:
        out = fs / "deploy"
        quant.save_quantized(tiny_deploy(0), out)
        before = {p.name: p.read_bytes() for p in out.iterdir()}
        ballast = fill_filesystem(fs, leave_bytes=64 << 10)
        try:
            quant.save_quantized(tiny_deploy(1), out)
            return False, "a second export onto a full tmpfs succeeded"
        except OSError as e:
            one_line = (
                e.errno == errno.ENOSPC
                and str(e) == f"[Errno 28] cannot write {out}: no space left on device"
            )
            cause = type(e.__cause__).__name__
        finally:
            ballast.unlink()
        intact = {p.name: p.read_bytes() for p in out.iterdir()} == before
        no_temp = sorted(p.name for p in fs.iterdir()) == ["deploy"]
        quant.load_quantized(out)
        ok = one_line and intact and no_temp
        return (
            ok,
            f"one line {one_line} (raised by {cause}), previous export intact {intact}, no temp {no_temp}",
        )


def real_enospc_shards(work: Path) -> Scenario:
    """Shards written onto a real, small tmpfs that fills in the second shard: one OSError naming that shard
    and 'no space left on device'; the first shard stays complete; a rerun with room completes the set."""
    import errno

    from qvgen.data import EncodedSample, WriterConfig, read_manifest, write_shards

    g = torch.Generator().manual_seed(1)
    samples = [
        EncodedSample(
            id=f"c{i}", caption=f"c {i}", latents_mean=torch.randn(16, 3, 16, 16, generator=g), latents_logvar=None,
            text_embeddings=torch.randn(16, 64, generator=g), text_length=3, video_shape=(9, 128, 128),
        )
        for i in range(8)
    ]  # fmt: skip
    cfg = WriterConfig(samples_per_shard=4, store_logvar=False)
    with small_filesystem(1 << 20) as fs:
        out = fs / "shards"
        write_shards(samples[:4], out, cfg, encoder_name="x")  # one complete shard
        ballast = fill_filesystem(fs, leave_bytes=48 << 10)
        try:
            write_shards(samples, out, cfg, encoder_name="x")
            return False, "the second shard fitted on a full disk"
        except OSError as e:
            named = (
                e.errno == errno.ENOSPC and "shard-000001" in str(e) and "no space left on device" in str(e)
            )
        ballast.unlink()
        first_ok = read_manifest(out).num_samples == 4 if (out / "manifest.json").exists() else True
        write_shards(samples, out, cfg, encoder_name="x")
        complete = read_manifest(out).num_samples == 8
        hidden = [p.name for p in out.iterdir() if p.name.startswith(".") and p.name != ".qvgen-output.json"]
        ok = named and first_ok and complete and not hidden
        return (
            ok,
            f"ENOSPC named the shard {named}; rerun with room completes 8 samples {complete}; temps left {hidden}",
        )


# ------------------------------------------------------------------------------------ sampled videos


def stale_videos_refused(work: Path) -> Scenario:
    """Item 3: a sample folder holding a video, then `model.path` → another deploy folder, the seed, and
    `model.kind` changed: each rerun refused naming the fact, the old video untouched; `--overwrite`
    resamples it."""
    import copy

    ckpt = Path(shutil.copytree(tiny_checkpoint("wan"), work / "ckpt"))
    fam = get_family("wan")
    student = fam.load_transformer(ckpt)
    quant.prepare_(student, quant.QuantConfig(), layer_roles=fam.layer_roles)
    quant.initialize_(student, progress=False)
    a, b = copy.deepcopy(student), copy.deepcopy(student)
    with torch.no_grad():
        for module in b.modules():
            if hasattr(module, "act_quantizer") and hasattr(module.act_quantizer, "clip_logit_hi"):
                module.act_quantizer.clip_logit_hi.add_(0.5)
    for name, model in (("deploy-a", a), ("deploy-b", b)):
        quant.convert_(model)
        quant.save_quantized(model, work / name, identity=str(ckpt))
    cfg = {
        "family": "wan",
        "model": {"kind": "deploy", "path": str(work / "deploy-a"), "base": str(ckpt)},
        "prompts": {"prompts": ["a red square moves left"]},
        "out_dir": str(work / "videos"),
        "seed": 0,
        "sampling": {"height": 32, "width": 32, "num_frames": 5, "num_inference_steps": 2},
        "device": "cpu",
    }
    path = work / "sample.yaml"
    path.write_text(yaml.safe_dump(cfg))
    first = sh([*EVAL, "sample", str(path)])
    video = work / "videos" / "a red square moves left-0.mp4"
    before = video.read_bytes() if video.is_file() else b""
    cases = {
        "model.path": (["--set", f"model.path={work / 'deploy-b'}"], "model.digest"),
        "seed": (["--set", "seed=1"], "seed: 0 → 1"),
        "model.kind": (
            ["--set", f"model={{kind: full_precision, path: {ckpt}}}"],
            "model.kind: deploy → full_precision",
        ),
    }
    results = {}
    for name, (flags, needle) in cases.items():
        proc = sh([*EVAL, "sample", str(path), *flags])
        results[name] = one_line_error(proc, needle) and video.read_bytes() == before
    redo = sh([*EVAL, "sample", str(path), "--set", f"model.path={work / 'deploy-b'}", "--overwrite"])
    resampled = redo.returncode == 0 and video.is_file()
    ok = first.returncode == 0 and bool(before) and all(results.values()) and resampled
    return ok, ", ".join(f"{k} changed: {'refused' if v else 'REUSED'}" for k, v in results.items()) + (
        f"; --overwrite resamples: {resampled}"
    )


# ------------------------------------------------------------------------------------ fuzzing


def fuzz_loaders(work: Path) -> tuple[bool, str, int, int]:
    """Every user-fed loader's hypothesis fuzz tests (`packages/*/tests/test_fuzz*.py`, default profile),
    counted through `QVGEN_FUZZ_COUNTS`: (ok, evidence, generated inputs, failures)."""
    from qvgen.core.fuzzing import run_fuzz_suite

    counts = run_fuzz_suite(Path(__file__).resolve().parents[1], work / "fuzz_counts.json")
    cases, failures = int(counts["fuzz_cases"]), int(counts["fuzz_failures"])
    loaders = counts.get("loaders", {})
    per = ", ".join(f"{k} {v['cases']}" for k, v in sorted(loaders.items()))
    return (
        failures == 0 and cases >= 1000,
        f"{cases} inputs over {len(loaders)} loaders ({per})",
        cases,
        failures,
    )
