import pytest

from tunewise.data.encode import IGNORE, encode_conversation, encode_dataset
from tunewise.data.formats import Conversation
from tunewise.models.load import load_tokenizer, resolve_model


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(resolve_model("tunewise-tiny"))


def labelled_text(tok, ids, labels):
    """The labelled spans, decoded one by one."""
    spans, cur = [], []
    for i, l in zip(ids, labels):
        if l == IGNORE:
            if cur:
                spans.append(tok.decode(cur))
                cur = []
        else:
            assert l == i
            cur.append(i)
    if cur:
        spans.append(tok.decode(cur))
    return spans


def test_only_assistant_replies_and_their_end_of_turn_are_trained(tok):
    msgs = [{"role": "system", "content": "sys"}, {"role": "user", "content": "你是谁？"},
            {"role": "assistant", "content": "我是小黄。"}, {"role": "user", "content": "2+3=?"},
            {"role": "assistant", "content": "5"}]
    ids, labels = encode_conversation(tok, msgs)
    full = tok.apply_chat_template(msgs, tokenize=False)
    assert tok.decode(ids) == full
    assert labelled_text(tok, ids, labels) == ["我是小黄。<|im_end|>", "5<|im_end|>"]


def test_truncation_strategies(tok):
    conv = Conversation([{"role": "user", "content": "a " * 40}, {"role": "assistant", "content": "ok"}], "x:1")
    rows, stats = encode_dataset(tok, [conv], None, max_length=20, truncation="delete")
    assert rows == [] and stats.deleted_too_long == 1
    rows, stats = encode_dataset(tok, [conv], None, max_length=20, truncation="left")
    assert len(rows[0]["input_ids"]) == 20 and stats.truncated == 1
    assert any(l != IGNORE for l in rows[0]["labels"])
    rows, _ = encode_dataset(tok, [conv], None, max_length=20, truncation="right")
    assert rows == []  # the reply was cut off entirely, so nothing is left to learn


def test_system_flag_applies_only_where_a_row_has_none(tok):
    plain = Conversation([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], "x:1")
    own = Conversation([{"role": "system", "content": "mine"}] + plain.messages, "x:2")
    rows, _ = encode_dataset(tok, [plain, own], "given", max_length=100)
    assert "given" in tok.decode(rows[0]["input_ids"])
    assert "mine" in tok.decode(rows[1]["input_ids"]) and "given" not in tok.decode(rows[1]["input_ids"])
