from qvgen.models.tokenizer import make_t5_tokenizer, train_t5_vocab


def test_vocab_training_is_deterministic_and_uses_t5_special_ids():
    a, b = train_t5_vocab(), train_t5_vocab()
    assert a == b
    assert [piece for piece, _ in a[:3]] == ["<pad>", "</s>", "<unk>"]


def test_tokenizer_segments_words_appends_eos_and_pads_right():
    tok = make_t5_tokenizer(model_max_length=16)
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    ids = tok("a red square moves left", padding="max_length", max_length=16).input_ids
    assert len(ids) == 16 and ids[-1] == 0
    real = [i for i in ids if i != 0]
    assert real[-1] == 1 and 2 not in real
    assert tok.decode(real, skip_special_tokens=True) == "a red square moves left"
