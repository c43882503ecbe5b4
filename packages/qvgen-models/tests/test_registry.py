import pytest

from qvgen.models import FAMILIES, CogVideoXFamily, WanFamily, WanSpec, get_family, load_components


def test_registry_holds_both_families_under_their_names():
    assert isinstance(FAMILIES["wan"], WanFamily) and isinstance(FAMILIES["cogvideox"], CogVideoXFamily)
    assert all(fam.name == name for name, fam in FAMILIES.items())
    with pytest.raises(TypeError):
        FAMILIES["x"] = WanFamily()  # type: ignore[index]


def test_get_family_unknown_name_lists_known_families():
    assert get_family("wan") is FAMILIES["wan"]
    with pytest.raises(KeyError, match=r"unknown model family 'hunyuan'.*cogvideox, wan"):
        get_family("hunyuan")


def test_load_components_without_checkpoint_says_what_to_set():
    with pytest.raises(ValueError, match="checkpoint is not set"):
        load_components(WanSpec())


def test_official_recipe_keeps_nothing_in_high_precision():
    assert all(fam.keep_high_precision == () for fam in FAMILIES.values())
