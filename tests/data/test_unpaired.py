import json

import pytest

from tunewise.data.unpaired import label_counts, load_unpaired, trl_row
from tunewise.errors import UserError

PROMPT = [{"role": "user", "content": "Tell me tomorrow's weather"}]
REPLY = {"role": "assistant", "content": "I don't know"}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_ms_swift_and_trl_forms(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [
        {"messages": PROMPT + [REPLY], "label": False},  # ms-swift's KTO row
        {"query": "Tell me tomorrow's weather", "response": "I don't know", "label": "false"},
        {"prompt": "Tell me tomorrow's weather", "completion": "I don't know", "label": 0},  # TRL's
        {"prompt": PROMPT, "completion": [REPLY], "label": "TRUE"},
        {"conversations": [{"from": "human", "value": "Tell me tomorrow's weather"},
                           {"from": "gpt", "value": "I don't know"}], "label": 1},
    ])
    convs = load_unpaired([f])
    rows = [trl_row(c) for c in convs]
    assert all(r["prompt"] == PROMPT and r["completion"] == [REPLY] for r in rows), rows
    assert [r["label"] for r in rows] == [False, False, False, True, True]
    assert label_counts(convs) == (2, 3)


def test_multi_turn_and_system(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [
        {"messages": [{"role": "system", "content": "You are a useful and harmless math calculator"},
                      {"role": "user", "content": "What is 1 + 1?"}, {"role": "assistant", "content": "It equals 2"},
                      {"role": "user", "content": "What about adding 1?"},
                      {"role": "assistant", "content": "It equals 3"}], "label": True}])
    (conv,) = load_unpaired([f])
    row = trl_row(conv, system="not used: the row has one")
    assert [m["role"] for m in row["prompt"]] == ["system", "user", "assistant", "user"]
    assert row["completion"] == [{"role": "assistant", "content": "It equals 3"}]
    g = write_jsonl(tmp_path / "g.jsonl", [{"prompt": "q", "completion": "a", "label": True}])
    assert trl_row(load_unpaired([g])[0], system="S")["prompt"][0] == {"role": "system", "content": "S"}


@pytest.mark.parametrize("row, message", [
    ({"messages": PROMPT + [REPLY]}, "d.jsonl:1: missing field 'label'"),
    ({"messages": PROMPT + [REPLY], "label": "maybe"}, "d.jsonl:1: field 'label' is 'maybe'; a KTO label is true"),
    ({"messages": PROMPT + [REPLY], "label": 2}, "field 'label' is 2"),
    ({"messages": PROMPT + [REPLY], "label": None}, "not null"),
    ({"messages": PROMPT, "label": True}, "d.jsonl:1: missing field 'response'"),
    ({"messages": PROMPT + [{"role": "assistant", "content": " "}], "label": True}, "is empty"),
    ({"prompt": "q", "completion": [REPLY, REPLY], "label": True}, "exactly one assistant message"),
    ({"prompt": "q", "completion": 3, "label": True}, "field 'completion' must be a string or a list"),
    ({"messages": PROMPT + [REPLY], "label": True, "tools": [{"type": "function", "function": {"name": "f"}}]},
     "tools in KTO rows"),
])
def test_bad_rows_name_file_line_and_field(tmp_path, row, message):
    f = write_jsonl(tmp_path / "d.jsonl", [row])
    with pytest.raises(UserError) as e:
        load_unpaired([f])
    assert message.replace("d.jsonl", f) in str(e.value) or message in str(e.value), str(e.value)


def test_csv_labels_are_strings(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("query,response,label\nhi,hello,true\nhi,go away,false\n", encoding="utf-8")
    assert [trl_row(c)["label"] for c in load_unpaired([str(path)])] == [True, False]


@pytest.mark.slow
def test_trl_kto_trainer_takes_the_rows(tmp_path):
    """One KTO step of TRL's KTOTrainer on the embedded model, fed the rows as trl_row makes them."""
    from datasets import Dataset
    from trl import KTOConfig, KTOTrainer

    from tunewise.models.load import load_model, load_tokenizer, resolve_model

    f = write_jsonl(tmp_path / "d.jsonl", [
        {"messages": [{"role": "user", "content": "1+1=?"}, {"role": "assistant", "content": "1+1=2"}], "label": True},
        {"messages": [{"role": "user", "content": "2+2=?"}, {"role": "assistant", "content": "2+2=5"}], "label": False},
        {"query": "3+3=?", "response": "3+3=6", "label": "true"},
        {"prompt": "4+4=?", "completion": "4+4=9", "label": 0},
    ])
    rows = [trl_row(c) for c in load_unpaired([f])]
    path = resolve_model("tunewise-tiny")
    config = KTOConfig(output_dir=str(tmp_path / "run"), max_steps=1, per_device_train_batch_size=4,
                       learning_rate=1e-5, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True,
                       disable_tqdm=True)
    trainer = KTOTrainer(model=load_model(path), args=config, train_dataset=Dataset.from_list(rows),
                         processing_class=load_tokenizer(path))
    trainer.train()
    assert "loss" in trainer.state.log_history[0]
