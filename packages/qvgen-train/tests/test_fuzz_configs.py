"""Fuzzing the run and precompute configs a user writes (issue 32): every file and `--set` list either loads
or is one `ConfigError` naming the file (or the `--set` item); never a traceback, a hang or a write.

The inputs start from the example configs in configs/ and are mutated by `qvgen.core.fuzzing`'s strategies.
`QVGEN_FUZZ_PROFILE=slow` runs ten times more; `QVGEN_FUZZ_COUNTS=FILE` counts them.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from qvgen.core.fuzzing import check_loader, config_documents, fuzz_settings, junk_values, paths_of
from qvgen.train import PrecomputeConfig, RunConfig, load_config, load_precompute_config

CONFIGS = Path(__file__).resolve().parents[3] / "configs"
RUN_TREES = [
    yaml.safe_load(p.read_text())
    for p in sorted(CONFIGS.glob("*.yaml"))
    if not p.name.endswith("precompute.yaml")
]
PRECOMPUTE_TREE = yaml.safe_load((CONFIGS / "tiny-wan-precompute.yaml").read_text())

pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")


def _check_config_file(loader: str, load, cls: type, document: bytes, overrides: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = folder / "config.yaml"
        path.write_bytes(document)

        def valid(cfg: object) -> None:
            assert isinstance(cfg, cls), type(cfg)

        check_loader(
            loader, lambda: load(path, overrides), folder=folder, names=[str(path), "--set"], validate=valid
        )


@st.composite
def overrides(draw: st.DrawFn, tree: dict) -> list[str]:
    """0-2 `--set KEY=VALUE` items: real dotted keys (or junk ones) with YAML-rendered junk values."""
    out = []
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):
        path = draw(st.sampled_from([p for p in paths_of(tree) if p and all(isinstance(k, str) for k in p)]))
        key = ".".join(path) if draw(st.integers(0, 4)) else draw(st.text(max_size=10))
        value = draw(junk_values)
        raw = (
            yaml.safe_dump(value, default_flow_style=True).strip()
            if draw(st.booleans())
            else draw(st.text(max_size=12))
        )
        out.append(
            f"{key}={raw.removesuffix('...').strip()}"
            if draw(st.integers(0, 6))
            else draw(st.text(max_size=10))
        )
    return out


@st.composite
def run_inputs(draw: st.DrawFn) -> tuple[bytes, list[str]]:
    tree = draw(st.sampled_from(RUN_TREES))
    return draw(config_documents(tree)), draw(overrides(tree))


@fuzz_settings(300)
@given(run_inputs())
def test_fuzzed_run_config_loads_or_is_one_config_error_naming_the_file(
    case: tuple[bytes, list[str]],
) -> None:
    document, items = case
    _check_config_file("train.RunConfig", load_config, RunConfig, document, items)


@fuzz_settings(200)
@given(config_documents(PRECOMPUTE_TREE), overrides(PRECOMPUTE_TREE))
def test_fuzzed_precompute_config_loads_or_is_one_config_error_naming_the_file(
    document: bytes, items: list[str]
) -> None:
    _check_config_file("train.PrecomputeConfig", load_precompute_config, PrecomputeConfig, document, items)


def test_the_unmutated_example_configs_load() -> None:
    """The mutations start from valid trees: if these did not load, every case would be an error case."""
    for tree in RUN_TREES:
        assert isinstance(RunConfig.model_validate(tree), RunConfig)
    assert isinstance(PrecomputeConfig.model_validate(PRECOMPUTE_TREE), PrecomputeConfig)
