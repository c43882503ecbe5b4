import torch

from qvgen.data import COLOURS, DIRECTIONS, SHAPE_SETS, parse_caption
from qvgen.demo import TeacherConfig, build_teacher_components
from qvgen.demo.model_card import _text_step
from qvgen.demo.text_training import caption_batch, train_text_encoder

torch.set_num_threads(1)


def _encoder_state(components) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in components.text_encoder.state_dict().items()}


def test_caption_batch_labels_are_what_the_grammar_parses():
    shapes = SHAPE_SETS["elongated"]
    captions, labels = caption_batch(torch.Generator().manual_seed(0), 64, shapes)
    counts = set()
    for caption, label in zip(captions, labels):
        clauses = parse_caption(caption)
        counts.add(len(clauses))
        for k, clause in enumerate(clauses):
            colour, shape, direction = label[k].tolist()
            assert (list(COLOURS)[colour], shapes[shape], list(DIRECTIONS)[direction]) == (
                clause.colour, clause.shape, clause.direction,
            )  # fmt: skip
        assert (label[len(clauses) :] == -1).all()
        assert len({c.colour for c in clauses}) == len(clauses)  # distinct colours, as the world draws them
    assert counts == {1, 2}


def test_training_teaches_the_encoder_to_tell_the_clauses_apart():
    # A random encoder lets single attention readers find clause 2's colour only partly; training the
    # encoder with them makes it readable (the property the teacher's transformer needs).
    cfg = TeacherConfig(text_length=32, shapes="elongated", text_steps=200)
    frozen = build_teacher_components(0, 4, text_length=32)
    before = _encoder_state(frozen)
    probe = train_text_encoder(frozen, cfg, progress=False, train_encoder=False)
    after = _encoder_state(frozen)
    assert all(torch.equal(before[k], after[k]) for k in before)  # the probe leaves the encoder alone

    trained = build_teacher_components(0, 4, text_length=32)
    log = train_text_encoder(trained, cfg, progress=False)
    assert log["steps"] == 200 and not any(p.requires_grad for p in trained.text_encoder.parameters())
    assert log["accuracy"]["clause2_colour"] > probe["accuracy"]["clause2_colour"] + 0.15
    assert log["accuracy"]["all"] > 0.8


def test_text_training_is_deterministic():
    cfg = TeacherConfig(text_length=32, text_steps=3, text_batch_size=4)
    a, b = (build_teacher_components(0, 4, text_length=32) for _ in range(2))
    train_text_encoder(a, cfg, progress=False)
    train_text_encoder(b, cfg, progress=False)
    sa, sb = _encoder_state(a), _encoder_state(b)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["shared.weight"], build_teacher_components(0, 4).text_encoder.shared.weight)


def test_model_card_describes_the_text_phase_only_when_it_ran():
    cfg = TeacherConfig(text_steps=5).model_dump(mode="json")
    random_encoder, no_step = _text_step({"config": cfg, "text_encoder": {"steps": 0}})
    assert "randomly initialised, frozen" in random_encoder and no_step == ""
    accuracy = {"all": 0.99, "clause2_colour": 0.95, "clause2_shape": 1.0, "clause2_direction": 1.0}
    taught, step = _text_step({"config": cfg, "text_encoder": {"steps": 5, "accuracy": accuracy}})
    assert "taught which clause says what in 5 steps" in taught
    assert step.startswith("0. Text encoder") and "clause-2 colour 0.950" in step
