"""Fuzzing the eval configs a user writes (issue 32): every `sample`/`compare`/`vbench` config file and `--set`
list either loads or is one `ConfigError` naming the file (or the `--set` item); never a traceback, a hang or a
write.

Inputs start from valid configs (the shapes the CLI tests use) mutated by `qvgen.core.fuzzing`'s strategies.
`QVGEN_FUZZ_PROFILE=slow` runs ten times more; `QVGEN_FUZZ_COUNTS=FILE` counts them.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from qvgen.core import load_config
from qvgen.core.fuzzing import check_loader, config_documents, fuzz_settings, junk_values, paths_of
from qvgen.eval import CompareConfig, SampleConfig, VBenchConfig

SAMPLE = {
    "family": "wan",
    "model": {"kind": "deploy", "path": "runs/deploy", "base": "runs/checkpoint"},
    "prompts": {"prompts": ["a red square moves left"], "videos_per_prompt": 2},
    "out_dir": "runs/videos",
    "seed": 3,
    "sampling": {"height": 32, "width": 32, "num_frames": 5, "num_inference_steps": 1, "guidance_scale": 5.0},
    "dtype": "float32",
}
COMPARE = {
    "family": "cogvideox",
    "teacher": {"path": "runs/teacher"},
    "out_dir": "runs/compare",
    "prompts": {"prompts": ["a blue circle moves up", "a red square moves left"]},
    "variants": [
        {"name": "fq", "model": {"kind": "fake_quant", "path": "runs/student"}},
        {"name": "w4a4", "model": {"kind": "deploy", "path": "runs/deploy"}},
    ],
    "sampling": {"num_inference_steps": 2, "use_dynamic_cfg": True},
    "adherence": True,
}
VBENCH = {
    "videos_dir": "runs/videos",
    "output_dir": "runs/vbench",
    "dimensions": ["color"],
    "mode": "vbench_standard",
}
CASES = [(SampleConfig, SAMPLE), (CompareConfig, COMPARE), (VBenchConfig, VBENCH)]

pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")


@st.composite
def overrides(draw: st.DrawFn, tree: dict) -> list[str]:
    """0-2 `--set KEY=VALUE` items: real dotted keys (or junk ones) with YAML-rendered junk values."""
    out = []
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):
        path = draw(st.sampled_from([p for p in paths_of(tree) if p and all(isinstance(k, str) for k in p)]))
        key = ".".join(path) if draw(st.integers(0, 4)) else draw(st.text(max_size=10))
        raw = yaml.safe_dump(draw(junk_values), default_flow_style=True).removesuffix("...\n").strip()
        out.append(f"{key}={raw}" if draw(st.integers(0, 6)) else draw(st.text(max_size=10)))
    return out


@st.composite
def eval_inputs(draw: st.DrawFn) -> tuple[type, bytes, list[str]]:
    cls, tree = draw(st.sampled_from(CASES))
    return cls, draw(config_documents(tree)), draw(overrides(tree))


@fuzz_settings(300)
@given(eval_inputs())
def test_fuzzed_eval_config_loads_or_is_one_config_error_naming_the_file(
    case: tuple[type, bytes, list[str]],
) -> None:
    cls, document, items = case
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = folder / "config.yaml"
        path.write_bytes(document)

        def valid(cfg: object) -> None:
            assert isinstance(cfg, cls), type(cfg)

        check_loader(
            f"eval.{cls.__name__}",
            lambda: load_config(cls, path, items),
            folder=folder,
            names=[str(path), "--set"],
            validate=valid,
        )


def test_the_unmutated_eval_configs_load() -> None:
    """The mutations start from valid trees: if these did not load, every case would be an error case."""
    for cls, tree in CASES:
        assert isinstance(cls.model_validate(tree), cls)
