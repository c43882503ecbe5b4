"""`qvgen --help`, `qvgen demo --help` and a wrong flag are answered before torch, diffusers or transformers are
imported; the parser's defaults are `DemoConfig`'s."""

import pytest

from qvgen.core.testing import HEAVY_MODULES, modules_imported_by_console_script

HEAVY = HEAVY_MODULES


def _imported(*argv: str) -> tuple[int, set[str]]:
    return modules_imported_by_console_script("qvgen.entrypoints.qvgen", "qvgen", *argv)


@pytest.mark.parametrize(
    ("argv", "exit_code"),
    [(["--help"], 0), (["demo", "--help"], 0), (["train-teacher", "--help"], 0), (["demo", "--nope"], 2)],
)
def test_help_and_usage_errors_import_no_torch(argv: list[str], exit_code: int) -> None:
    code, imported = _imported(*argv)
    assert code == exit_code
    assert "qvgen.entrypoints.qvgen" in imported
    assert not HEAVY & imported, f"imported before parsing: {sorted(HEAVY & imported)}"


def test_demo_parser_defaults_are_demo_config_defaults() -> None:
    from qvgen.demo import DemoConfig
    from qvgen.demo.cli import build_parser

    args = build_parser().parse_args(["demo"])
    expected = DemoConfig()
    parsed = {
        "out": args.out, "steps": args.steps, "prompts": args.prompts, "seed": args.seed, "bits": args.bits,
        "num_clips": args.clips, "sampling_steps": args.sampling_steps, "guidance_scale": args.guidance,
        "threads": args.threads,
    }  # fmt: skip
    assert parsed == {name: getattr(expected, name) for name in parsed}
    assert args.teacher is None  # the dispatch then takes DemoConfig's (the embedded teacher)
