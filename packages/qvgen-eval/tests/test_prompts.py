import json

import pytest

from qvgen.eval import load_prompts, plan_items, video_filename


def test_text_prompt_file_gives_stripped_unique_lines_in_order(tmp_path):
    p = tmp_path / "p.txt"
    p.write_text("a cat\n\n  a dog  \na cat\n")
    assert load_prompts(p) == ["a cat", "a dog"]


def test_vbench_full_info_json_is_filtered_by_dimension(tmp_path):
    p = tmp_path / "VBench_full_info.json"
    p.write_text(json.dumps([
        {"prompt_en": "a toilet, frozen in time", "dimension": ["temporal_flickering"]},
        {"prompt_en": "a person is skiing", "dimension": ["human_action", "subject_consistency"]},
        {"prompt_en": "a bear", "dimension": ["object_class"]},
    ]))  # fmt: skip
    assert load_prompts(p) == ["a toilet, frozen in time", "a person is skiing", "a bear"]
    assert load_prompts(p, ["subject_consistency", "object_class"]) == ["a person is skiing", "a bear"]
    with pytest.raises(ValueError, match="no prompts for dimensions"):
        load_prompts(p, ["color"])


def test_bad_prompt_files_are_named_in_the_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('[{"prompt": "x"}]')
    with pytest.raises(ValueError, match=r"bad\.json, entry 0"):
        load_prompts(bad)
    with pytest.raises(FileNotFoundError, match=r"missing\.txt"):
        load_prompts(tmp_path / "missing.txt")


def test_video_names_follow_vbench_and_refuse_unusable_prompts():
    assert video_filename("a cat, frozen in time", 3) == "a cat, frozen in time-3.mp4"
    with pytest.raises(ValueError, match="file name"):
        video_filename("AC/DC concert", 0)
    with pytest.raises(ValueError, match="shorten"):
        video_filename("x" * 300, 0)


def test_plan_gives_every_video_its_own_seed_independent_of_anything_else():
    items = plan_items(["a", "b"], 3, seed=10)
    assert [(i.prompt, i.index, i.seed) for i in items] == [
        ("a", 0, 10), ("a", 1, 11), ("a", 2, 12), ("b", 0, 13), ("b", 1, 14), ("b", 2, 15),
    ]  # fmt: skip
    assert items[4].filename == "b-1.mp4"
