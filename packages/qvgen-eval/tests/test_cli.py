import json
from pathlib import Path

from qvgen.eval.cli import main

DATA = Path(__file__).parent / "data" / "vbench"


def test_schema_prints_each_config_and_report_schema(capsys):
    for which, title in [("sample", "SampleConfig"), ("compare", "CompareConfig"), ("vbench", "VBenchConfig"),
                         ("report", "EvalReport"), ("vbench-report", "VBenchReport")]:  # fmt: skip
        assert main(["schema", which]) == 0
        assert json.loads(capsys.readouterr().out)["title"] == title


def test_vbench_parse_writes_the_typed_report(tmp_path, capsys):
    out = tmp_path / "vb.json"
    assert main(["vbench", "--parse", str(DATA / "all_dimensions_eval_results.json"), "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert set(data["dimensions"]) >= {"scene", "dynamic_degree"} and data["total"] is not None


def test_vbench_config_errors_exit_2(tmp_path, capsys):
    cfg = tmp_path / "vb.yaml"
    cfg.write_text("videos_dir: v\noutput_dir: o\ndimensions: [color]\n")
    assert main(["vbench", str(cfg)]) == 2
    assert "vbench_standard" in capsys.readouterr().err
    assert main(["vbench"]) == 2
    assert main(["vbench", str(cfg), "--set", "mode=vbench_standard", "--dry-run"]) == 0


def test_compare_config_refuses_duplicate_variant_names(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "family: wan\nteacher: {path: t}\nout_dir: o\nprompts: {prompts: [a]}\n"
        "variants: [{name: q, model: {kind: fake_quant, path: f}}, {name: q, model: {kind: deploy, path: d}}]\n"
    )
    assert main(["compare", str(cfg)]) == 2
    assert "unique names" in capsys.readouterr().err
