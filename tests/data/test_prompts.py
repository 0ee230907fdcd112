import json

import pytest

from tunewise.data.prompts import load_prompts, trl_rows
from tunewise.errors import UserError

USER = [{"role": "user", "content": "What is 1 + 1?"}]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_ms_swift_and_trl_forms_give_the_same_row(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [
        {"messages": USER, "solution": "2"},
        {"messages": USER + [{"role": "assistant", "content": "2"}]},  # the reply serves as solution
        {"query": "What is 1 + 1?", "response": "2"},
        {"problem": "What is 1 + 1?", "solution": 2},  # ms-swift's query name; a number as solution
        {"question": "What is 1 + 1?", "answer": "2"},
        {"prompt": USER, "solution": "2"},  # TRL's conversational prompt
        {"conversations": [{"from": "human", "value": "What is 1 + 1?"}], "solution": "2"},
        {"instruction": "What is 1 + 1?", "output": "2"},
    ])
    rows = trl_rows(load_prompts([f]))
    for i, row in enumerate(rows):
        assert row["prompt"] == USER, row
        assert row["solution"] == "2", row
        assert row["row_origin"] == f"{f}:{i + 1}"
    assert rows[4]["answer"] == "2"  # other fields stay columns for the rewards
    assert set(rows[0]) == set(rows[4])  # every row has every column (None where it lacks one)
    assert rows[0]["answer"] is None


def test_solution_field_wins_over_the_reply_and_extra_fields_stay(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [
        {"messages": [{"role": "system", "content": "be brief"}] + USER + [{"role": "assistant", "content": "1+1=2"}],
         "solution": "\\boxed{2}", "target": 2, "nums": [1, 1]}])
    (row,) = trl_rows(load_prompts([f]), system="ignored: the row has its own")
    assert row["prompt"] == [{"role": "system", "content": "be brief"}] + USER
    assert (row["solution"], row["target"], row["nums"]) == ("\\boxed{2}", 2, [1, 1])


def test_system_flag_and_multi_turn_history(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [{"query": "and 2+2?", "history": [["1+1?", "2"]]}])
    (row,) = trl_rows(load_prompts([f]), system="S")
    assert [m["role"] for m in row["prompt"]] == ["system", "user", "assistant", "user"]
    assert row["solution"] is None  # no solution: only rewards that need one refuse it (rewards.check_rows)


def test_builtin_additions_set_is_disjoint_from_the_held_out_pairs():
    from tunewise.evaluate.skills import heldout_addition_pairs

    rows = trl_rows(load_prompts(["additions"]))
    assert len(rows) == 2500 - 200
    asked = set()
    for row in rows:
        digits = [int(x) for x in __import__("re").findall(r"\d+", row["prompt"][0]["content"])]
        assert int(row["solution"]) == sum(digits)
        asked.add(tuple(digits))
    assert not asked & set(heldout_addition_pairs())
    assert len(trl_rows(load_prompts(["additions#10"]))) == 10


@pytest.mark.parametrize("row, message", [
    ({"solution": "2"}, "d.jsonl:1: missing the prompt: no field 'messages'"),
    ({"messages": USER, "solution": ["2"]}, "d.jsonl:1: field 'solution' must be a string or a number, got array"),
    ({"messages": USER, "solution": " "}, "d.jsonl:1: field 'solution' is empty"),
    ({"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]},
     "d.jsonl:1: the prompt has no user turn"),
    ({"messages": USER + [{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}]},
     "d.jsonl:1: the prompt must end with the user's turn, not 'assistant'"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]},
     "d.jsonl:1: messages must alternate user/assistant"),
    ({"messages": [{"role": "user", "content": "hi {{NAME}}"}]}, "still holds the placeholder {{NAME}}"),
    ({"messages": USER, "tools": [{"type": "function", "function": {"name": "f"}}]}, "tools in GRPO prompts"),
    (["not", "an", "object"], "d.jsonl:1: expected a JSON object, got array"),
])
def test_bad_rows_name_file_line_and_field(tmp_path, row, message):
    f = write_jsonl(tmp_path / "d.jsonl", [row])
    with pytest.raises(UserError) as e:
        load_prompts([f])
    assert message.replace("d.jsonl", f) in str(e.value) or message in str(e.value), str(e.value)


def test_placeholders_are_replaced(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [{"messages": [{"role": "user", "content": "Are you {{NAME}}?"}],
                                            "solution": "yes"}])
    (row,) = trl_rows(load_prompts([f], model_name=["小维", "Wise"], model_author=["A", "B"]))
    assert row["prompt"][0]["content"] == "Are you Wise?"


def hard_additions():
    """additions_hard's prompts, checked: never a held-out pair, each once, its solution the sum."""
    import re

    from tunewise.evaluate.skills import heldout_addition_pairs

    heldout = set(heldout_addition_pairs())
    rows = trl_rows(load_prompts(["additions_hard"]))
    asked = [row["prompt"][0]["content"] for row in rows]
    assert 500 < len(rows) < 2000 and len(set(asked)) == len(rows)
    for row in rows:
        digits = [int(x) for x in re.findall(r"\d+", row["prompt"][0]["content"])]
        assert int(row["solution"]) == sum(digits) and tuple(digits) not in heldout
    return asked


def test_builtin_hard_additions_are_held_out_free_and_solved():
    assert hard_additions()


@pytest.mark.slow  # loads the embedded model and scores 40 prompts (8 CPU-seconds)
def test_builtin_hard_additions_are_the_ones_the_shipped_model_is_unsure_of():
    """The file still matches the embedded model (scripts/make_grpo_hard_additions.py): a sample of its prompts
    scores below 0.9, a sample of the other non-held-out prompts not."""
    import importlib.util
    import random
    import re
    from pathlib import Path

    from tunewise.evaluate.skills import ADDITION_TEMPLATES, addition_answer, addition_prompt, heldout_addition_pairs
    from tunewise.models.load import load_model, load_tokenizer, resolve_model

    asked = hard_additions()
    heldout = set(heldout_addition_pairs())

    script = Path(__file__).parents[2] / "scripts" / "make_grpo_hard_additions.py"
    spec = importlib.util.spec_from_file_location("make_grpo_hard_additions", script)
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    every = [addition_prompt(a, b, k) for a in range(50) for b in range(50) for k in range(len(ADDITION_TEMPLATES))
             if (a, b) not in heldout]
    rng = random.Random(0)
    hard, easy = rng.sample(asked, 20), rng.sample(sorted(set(every) - set(asked)), 20)
    path = resolve_model("tunewise-tiny")
    model, tokenizer = load_model(path, dtype="float32").eval(), load_tokenizer(path)
    reply = lambda prompt: addition_answer(*(int(x) for x in re.findall(r"\d+", prompt))) + "<|im_end|>"
    probs = make.reply_probabilities(model, tokenizer, hard + easy, [reply(p) for p in hard + easy])
    assert all(p < 0.9 for p in probs[:20]) and all(p >= 0.9 for p in probs[20:])
