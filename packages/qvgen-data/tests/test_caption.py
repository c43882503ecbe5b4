"""The caption grammar both ways: `caption_for` writes it, `parse_caption` reads it back."""

import pytest

from qvgen.data import (
    COLOURS,
    DIRECTIONS,
    SHAPES,
    CaptionClause,
    CaptionGrammarError,
    make_clip,
    parse_caption,
)


def test_parse_caption_inverts_the_captions_of_one_and_two_object_clips() -> None:
    counts = set()
    for i in range(40):
        clip = make_clip(11, i, frames=5, max_objects=2)
        clauses = parse_caption(clip.caption)
        assert clauses == tuple(CaptionClause(o.colour, o.shape, o.direction) for o in clip.objects)
        counts.add(len(clauses))
    assert counts == {1, 2}


def test_parse_caption_ignores_case_spacing_a_final_stop_and_the_article() -> None:
    assert parse_caption("  An Orange circle   moves UP and a red square moves left. ") == (
        CaptionClause("orange", "circle", "up"),
        CaptionClause("red", "square", "left"),
    )


@pytest.mark.parametrize(
    ("caption", "named"),
    [
        ("a pink square moves left", "unknown colour 'pink'"),
        ("a red hexagon moves left", "unknown shape 'hexagon'"),
        ("a red square moves sideways", "unknown direction 'sideways'"),
        ("a red square jumps left", "clause 'a red square jumps left'"),
        ("a red square moves left and a blue circle", "clause 'a blue circle'"),
        ("the red square moves left", "clause"),
        ("   ", "empty caption"),
    ],
)
def test_parse_caption_rejects_captions_outside_the_grammar_naming_the_word(caption: str, named: str) -> None:
    with pytest.raises(CaptionGrammarError, match=named):
        parse_caption(caption)


def test_grammar_errors_list_the_vocabulary_and_are_value_errors() -> None:
    with pytest.raises(ValueError) as info:
        parse_caption("a pink square moves left")
    assert all(c in str(info.value) for c in COLOURS)
    with pytest.raises(CaptionGrammarError) as info:
        parse_caption("a red square hops")
    assert all(s in str(info.value) for s in SHAPES) and all(d in str(info.value) for d in DIRECTIONS)


def test_clause_phrases_join_back_into_the_clip_caption() -> None:
    for i in range(20):
        clip = make_clip(12, i, frames=5, max_objects=2)
        assert " and ".join(c.phrase for c in parse_caption(clip.caption)) == clip.caption
