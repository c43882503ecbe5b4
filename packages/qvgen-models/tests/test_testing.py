import pytest

from qvgen.models import CogVideoXSpec, WanSpec
from qvgen.models.testing import tiny_checkpoint, tiny_spec


def test_tiny_spec_points_at_one_cached_folder_per_family():
    wan = tiny_spec("wan")
    assert isinstance(wan, WanSpec) and wan.dtype == "float32"
    assert wan.checkpoint == tiny_checkpoint("wan") == tiny_spec("wan").checkpoint
    assert (wan.checkpoint / "model_index.json").is_file()
    cog = tiny_spec("cogvideox", dtype="bfloat16")
    assert isinstance(cog, CogVideoXSpec) and cog.dtype == "bfloat16"


def test_tiny_spec_of_unknown_family_lists_the_known_ones():
    with pytest.raises(KeyError, match="known families"):
        tiny_spec("mochi")
