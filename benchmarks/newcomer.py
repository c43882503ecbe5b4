"""The newcomer's path, measured in fresh venvs: selective installs, one-call W4A4 load, quiet --help, report.

    python benchmarks/newcomer.py [--work DIR] [--keep]

1. wheelhouse: every packages/* built into DIR/dist (`pip wheel --no-deps --no-build-isolation`, as
   `nox -s wheelhouse` does);
2. a fresh venv installs `qvgen-quant` alone, another `qvgen-eval`, each from the wheelhouse
   (`--find-links dist`: a package's qvgen siblings, qvgen-core included, come from there); each imports its
   package, holds exactly its declared qvgen closure, and the quant venv has no diffusers;
3. in the eval venv: a W4A4 RTN deploy export of the embedded tiny teacher, then (under strace) the
   one-call `qvgen.models.load_pipeline(base, deploy)` + one sampled video, against the baseline two-step load
   (float skeleton from the base checkpoint + `load_quantized(skeleton, deploy)`): bytes of the base
   transformer folder opened, wall time, identical frames;
4. `qvgen-demo` added from the wheelhouse: warning lines printed by `qvgen demo --help` vs a plain
   `import qvgen.demo` (the unfiltered library import);
5. a real `qvgen-eval compare` run (teacher vs the deploy export, one procedural prompt): does report.json
   carry prompt adherence?

Last line: ``newcomer selective_install_ok=… one_call_load_ok=… base_transformer_bytes_read=… help_warning_lines=…
report_has_adherence=…``. Every install uses ``-c constraints.txt`` and ``--no-compile``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ROOT / "packages"
CONSTRAINTS = ROOT / "constraints.txt"
TEACHER = PACKAGES / "qvgen-demo" / "src" / "qvgen" / "demo" / "assets" / "tiny_wan_teacher"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
WARNING_LINE = re.compile(r"warn|deprecat|Failed to load|Unable to import", re.IGNORECASE)
PROMPT = "a red square moves left"
SAMPLE = {"height": 64, "width": 64, "num_frames": 9, "num_inference_steps": 4, "guidance_scale": 3.0}

LOAD_SCRIPT = """
import json, sys, time
import numpy as np, torch
torch.set_num_threads(1)
from qvgen import quant
from qvgen.models import get_family, load_pipeline
mode, base, deploy, out = sys.argv[1:5]
t0 = time.perf_counter()
if mode == "one_call":
    pipe = load_pipeline(base, deploy, progress=False)
else:  # baseline: float skeleton from the base checkpoint, then the deploy tensors
    fam = get_family("wan")
    comps = fam.load(base)
    from dataclasses import replace
    comps = replace(comps, transformer=quant.load_quantized(fam.load_transformer(base), deploy))
    pipe = fam.pipeline(comps)
load_s = time.perf_counter() - t0
t0 = time.perf_counter()
frames = pipe(prompt=sys.argv[5], generator=torch.Generator().manual_seed(0), output_type="np",
              max_sequence_length=16, **json.loads(sys.argv[6])).frames
np.save(out, np.asarray(frames))
print(json.dumps({"load_s": load_s, "sample_s": time.perf_counter() - t0, "shape": list(np.shape(frames)),
                  "finite": bool(np.isfinite(frames).all()),
                  "deploy_layers": sum(isinstance(m, quant.DeployLinear) for m in pipe.transformer.modules())}))
"""

EXPORT_SCRIPT = """
import sys, torch
torch.set_num_threads(1)
from qvgen import quant
from qvgen.models import get_family
fam = get_family("wan")
t = fam.load_transformer(sys.argv[1])
quant.prepare_(t, quant.QuantConfig.w4a4(), layer_roles=fam.layer_roles)
quant.initialize_(t, progress=False)
quant.convert_(t)
quant.save_quantized(t, sys.argv[2], identity=sys.argv[1])
"""


def run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, **kw)  # type: ignore[call-overload, no-any-return]


def check(done: subprocess.CompletedProcess[str], what: str) -> str:
    if done.returncode != 0:
        raise RuntimeError(
            f"{what} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return done.stdout


def fresh_venv(path: Path) -> Path:
    check(run([sys.executable, "-m", "venv", str(path)]), f"venv {path}")
    return path / "bin" / "python"


def pip_install(python: Path, *args: str) -> None:
    check(
        run([str(python), "-m", "pip", "install", "-q", "--no-compile", "-c", str(CONSTRAINTS), *args]),
        f"pip install {' '.join(args)}",
    )


def declared_closure(name: str) -> set[str]:
    meta = tomllib.loads((PACKAGES / name / "pyproject.toml").read_text())
    out = {name}
    for dep in meta["project"]["dependencies"]:
        dep_name = re.split(r"[;\[<>=! ]", dep, maxsplit=1)[0]
        if dep_name.startswith("qvgen-"):
            out |= declared_closure(dep_name)
    return out


def installed_qvgen(python: Path, module: str) -> set[str]:
    probe = (
        f"import importlib.metadata as m, {module}\n"
        "print(' '.join(d.metadata['Name'] for d in m.distributions() if d.metadata['Name'].startswith('qvgen-')))"
    )
    return set(check(run([str(python), "-c", probe]), f"import {module}").split())


def traced(python: Path, args: list[str], trace: Path) -> subprocess.CompletedProcess[str]:
    cmd = ["strace", "-f", "-qq", "-e", "trace=open,openat,openat2", "-o", str(trace), str(python), *args]
    return run(cmd)


def bytes_opened_under(trace: Path, folder: Path) -> tuple[int, list[str]]:
    """Sizes of the distinct files under `folder` that the traced process opened successfully (an upper
    bound of the bytes it read from there: safetensors are mmapped whole)."""
    opened: set[Path] = set()
    pattern = re.compile(r'open(?:at2?)?\((?:[^,]+, )?"([^"]+)".*\) = (\d+)')
    for line in trace.read_text(errors="replace").splitlines():
        m = pattern.search(line)
        if m:
            p = Path(m.group(1))
            if p.is_relative_to(folder) and p.is_file():
                opened.add(p)
    return sum(p.stat().st_size for p in opened), sorted(str(p.relative_to(folder)) for p in opened)


def has_key(obj: object, key: str) -> bool:
    if isinstance(obj, dict):
        return key in obj or any(has_key(v, key) for v in obj.values())
    if isinstance(obj, list):
        return any(has_key(v, key) for v in obj)
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--work", type=Path, help="work folder (default: a temp folder, deleted unless --keep)"
    )
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="qvgen-newcomer-"))
    work.mkdir(parents=True, exist_ok=True)
    steps: list[tuple[str, float, str]] = []
    result = {"selective_install_ok": False, "one_call_load_ok": False, "base_transformer_bytes_read": -1,
              "help_warning_lines": -1, "report_has_adherence": False}  # fmt: skip
    start = time.perf_counter()

    def step(name: str, note: str, t0: float) -> None:
        steps.append((name, time.perf_counter() - t0, note))
        print(f"[{time.perf_counter() - start:7.1f} s] {name}: {note}", flush=True)

    try:
        t0 = time.perf_counter()
        dist = work / "dist"
        builder = fresh_venv(work / "venv-build")
        pip_install(builder, "hatchling")
        projects = sorted(str(p.parent) for p in PACKAGES.glob("*/pyproject.toml"))
        check(run([str(builder), "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist),
                   *projects]), "pip wheel")  # fmt: skip
        step("wheelhouse", f"{len(list(dist.glob('qvgen_*.whl')))} wheels for {len(projects)} packages", t0)

        t0 = time.perf_counter()
        quant_py = fresh_venv(work / "venv-quant")
        pip_install(quant_py, "--find-links", str(dist), "qvgen-quant")
        quant_ok = installed_qvgen(quant_py, "qvgen.quant") == declared_closure("qvgen-quant")
        no_diffusers = run([str(quant_py), "-c", "import diffusers"]).returncode != 0
        step(
            "install qvgen-quant alone from the wheelhouse",
            f"closure ok={quant_ok}, diffusers absent={no_diffusers}",
            t0,
        )

        t0 = time.perf_counter()
        py = fresh_venv(work / "venv-eval")
        pip_install(py, "--find-links", str(dist), "qvgen-eval")
        got = installed_qvgen(py, "qvgen.eval")
        eval_ok = got == declared_closure("qvgen-eval")
        step("install qvgen-eval from the wheelhouse", f"{sorted(got)} closure ok={eval_ok}", t0)
        result["selective_install_ok"] = quant_ok and no_diffusers and eval_ok

        t0 = time.perf_counter()
        base, deploy = work / "base", work / "deploy"
        shutil.copytree(TEACHER, base)
        check(run([str(py), "-c", EXPORT_SCRIPT, str(base), str(deploy)]), "deploy export")
        step("W4A4 RTN deploy export of the tiny teacher", str(deploy), t0)

        loads = {}
        for mode in ("baseline", "one_call"):
            t0 = time.perf_counter()
            trace = work / f"strace-{mode}.txt"
            done = traced(py, ["-c", LOAD_SCRIPT, mode, str(base), str(deploy), str(work / f"{mode}.npy"),
                               PROMPT, json.dumps(SAMPLE)], trace)  # fmt: skip
            info = json.loads(check(done, f"{mode} load").strip().splitlines()[-1])
            info["bytes"], info["files"] = bytes_opened_under(trace, base / "transformer")
            loads[mode] = info
            step(
                f"load + sample ({mode})", f"{info['bytes']} B of base/transformer opened {info['files']}", t0
            )
        import numpy as np

        same = bool(np.array_equal(np.load(work / "one_call.npy"), np.load(work / "baseline.npy")))
        one = loads["one_call"]
        # the baseline load must show reads under base/transformer, or "0 bytes" would prove nothing
        reads_seen = loads["baseline"]["bytes"] > 0
        result["one_call_load_ok"] = bool(
            one["finite"]
            and one["shape"] == [1, 9, 64, 64, 3]
            and one["deploy_layers"] > 0
            and same
            and reads_seen
        )
        result["base_transformer_bytes_read"] = one["bytes"]

        t0 = time.perf_counter()
        pip_install(py, "--find-links", str(dist), "qvgen-demo")
        helped = run([str(work / "venv-eval" / "bin" / "qvgen"), "demo", "--help"])
        check(helped, "qvgen demo --help")
        help_lines = [ln for ln in (helped.stdout + helped.stderr).splitlines() if WARNING_LINE.search(ln)]
        plain = run([str(py), "-c", "import qvgen.demo"])
        plain_lines = [ln for ln in (plain.stdout + plain.stderr).splitlines() if WARNING_LINE.search(ln)]
        result["help_warning_lines"] = len(help_lines)
        step("qvgen demo --help", f"{len(help_lines)} warning lines (plain import: {len(plain_lines)})", t0)

        t0 = time.perf_counter()
        cfg = {
            "family": "wan",
            "teacher": {"kind": "full_precision", "path": str(base)},
            "variants": [
                {"name": "rtn-w4a4", "model": {"kind": "deploy", "path": str(deploy), "base": str(base)}}
            ],
            "prompts": {"prompts": [PROMPT]},
            "out_dir": str(work / "compare"),
            "sampling": SAMPLE,
            "device": "cpu",
            "adherence": True,
        }
        (work / "compare.json").write_text(json.dumps(cfg))
        compared = run([str(work / "venv-eval" / "bin" / "qvgen-eval"), "compare", str(work / "compare.json"),
                        "--no-progress"])  # fmt: skip
        check(compared, "qvgen-eval compare")
        report = json.loads((work / "compare" / "report.json").read_text())
        result["report_has_adherence"] = has_key(report, "adherence")
        step("qvgen-eval compare", f"report.json has adherence: {result['report_has_adherence']}", t0)
    finally:
        print()
        print("| step | wall s | result |")
        print("|---|---|---|")
        for name, secs, note in steps:
            print(f"| {name} | {secs:.1f} | {note} |")
        if "loads" in locals() and len(loads) == 2:
            b, o = loads["baseline"], loads["one_call"]
            print()
            print("| load path | base transformer bytes opened | load s | sample s |")
            print("|---|---|---|---|")
            print(f"| baseline: skeleton + load_quantized(skeleton, dir) | {b['bytes']} | {b['load_s']:.2f} | "
                  f"{b['sample_s']:.2f} |")  # fmt: skip
            ratio = o["bytes"] / b["bytes"] if b["bytes"] else float("nan")
            print(f"| load_pipeline(base, deploy) | {o['bytes']} ({ratio:.2f}× baseline) | {o['load_s']:.2f} "
                  f"({o['load_s'] / b['load_s']:.2f}×) | {o['sample_s']:.2f} |")  # fmt: skip
        print(f"total {time.perf_counter() - start:.0f} s; work folder {work}")
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)
        print(
            "newcomer "
            + " ".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in result.items())
        )


if __name__ == "__main__":
    main()
