import pytest
from pydantic import ValidationError

from qvgen.auxiliary import AuxConfig, DecaySchedule, num_periods, required_steps, validate_against_steps

WAN = DecaySchedule(initial_rank=32, period=444)
COG = DecaySchedule(initial_rank=32, period=333)


def test_num_periods_is_floor_log2_plus_one():
    assert [num_periods(DecaySchedule(initial_rank=r)) for r in (1, 2, 3, 24, 32, 33)] == [1, 2, 2, 5, 6, 6]


def test_required_steps_accepts_the_official_runs():
    assert required_steps(WAN) == 2665
    validate_against_steps(AuxConfig(decay=WAN), 2667)
    validate_against_steps(COG, 2000)


def test_required_steps_counts_the_warm_up():
    assert required_steps(DecaySchedule(initial_rank=4, period=10, warm_up=7)) == 7 + 3 * 10 + 1


def test_validate_against_steps_says_how_many_steps_are_needed():
    with pytest.raises(ValueError, match=r"max_steps=2664 ends at step 2663") as info:
        validate_against_steps(AuxConfig(decay=WAN), 2664)
    message = str(info.value)
    assert "removed at step 2664" in message
    assert "Set max_steps >= 2665 or aux.decay.period <= 443" in message


def test_validate_against_steps_omits_period_hint_when_no_period_fits():
    with pytest.raises(ValueError, match=r"Set max_steps >= 2665\.$"):
        validate_against_steps(WAN, 3)


def test_aux_config_is_frozen_and_forbids_unknown_fields():
    cfg = AuxConfig()
    with pytest.raises(ValidationError):
        cfg.mode = "columns"  # type: ignore[misc]
    with pytest.raises(ValidationError, match="rank_decay"):
        AuxConfig(rank_decay=3)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("field", "value"),
    [("mode", "official"), ("optimizer_state", "keep"), ("init_iters", 0)],
)
def test_aux_config_rejects_bad_choices(field, value):
    with pytest.raises(ValidationError, match=field):
        AuxConfig(**{field: value})


@pytest.mark.parametrize(
    ("field", "value"), [("initial_rank", 0), ("period", 0), ("warm_up", -1), ("fade", "exp")]
)
def test_decay_schedule_rejects_bad_values(field, value):
    with pytest.raises(ValidationError, match=field):
        DecaySchedule(**{field: value})


def test_aux_config_round_trips_through_json():
    cfg = AuxConfig(decay=DecaySchedule(initial_rank=16, period=10, fade="linear"), mode="columns")
    assert AuxConfig.model_validate_json(cfg.model_dump_json()) == cfg
