"""tunewise.data.tools: tool calls in OpenAI, ms-swift and ShareGPT rows reach the chat template as transformers'
apply_chat_template(messages, tools=...) takes them; the calls are trained, the tool results are not, and a template
that cannot render them is refused. The tool-capable template is Qwen2.5's, as TRL ships it, on the embedded
tokenizer (its own ChatML template has no tools)."""
import json
import shutil

import pytest
from cli_runs import run_cli
from trl.chat_template_utils import qwen2_5_chat_template

from tunewise.data.encode import IGNORE, encode_conversation, encode_dataset
from tunewise.data.formats import load_conversations
from tunewise.data.preference import load_preferences
from tunewise.errors import UserError
from tunewise.models.load import load_tokenizer, resolve_model

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
ARGS = {"city": "Paris"}
EXPECTED = [  # the one normal form every input form below becomes
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "",
     "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": ARGS}}]},
    {"role": "tool", "content": "22C, sunny"},
    {"role": "assistant", "content": "It is 22C and sunny in Paris."},
]
OPENAI = {"tools": [WEATHER], "messages": [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"type": "function", "function": {"name": "get_weather", "arguments": json.dumps(ARGS)}}]},
    {"role": "tool", "content": "22C, sunny"},
    {"role": "assistant", "content": "It is 22C and sunny in Paris."}]}
MS_SWIFT = {"tools": json.dumps([WEATHER]), "messages": [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "tool_call", "content": json.dumps({"name": "get_weather", "arguments": ARGS})},
    {"role": "tool_response", "content": "22C, sunny"},
    {"role": "assistant", "content": "It is 22C and sunny in Paris."}]}
SHAREGPT = {"tools": json.dumps([WEATHER["function"]]), "conversations": [  # LLaMA-Factory: bare function schemas
    {"from": "human", "value": "Weather in Paris?"},
    {"from": "function_call", "value": json.dumps({"name": "get_weather", "arguments": ARGS})},
    {"from": "observation", "value": "22C, sunny"},
    {"from": "gpt", "value": "It is 22C and sunny in Paris."}]}


@pytest.fixture(scope="module")
def tiny():
    return load_tokenizer(resolve_model("tunewise-tiny"))


@pytest.fixture(scope="module")
def qwen():
    tok = load_tokenizer(resolve_model("tunewise-tiny"))
    tok.chat_template = qwen2_5_chat_template
    return tok


def write(tmp_path, *rows, name="d.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def trained(tok, ids, labels) -> list[str]:
    spans, cur = [], []
    for i, label in zip(ids, labels):
        if label == IGNORE and cur:
            spans, cur = spans + [tok.decode(cur)], []
        elif label != IGNORE:
            cur.append(i)
    return spans + ([tok.decode(cur)] if cur else [])


@pytest.mark.parametrize("row", [OPENAI, MS_SWIFT, SHAREGPT], ids=["openai", "ms-swift", "sharegpt"])
def test_every_form_becomes_the_transformers_form(tmp_path, row):
    (conv,) = load_conversations([write(tmp_path, row)])
    assert conv.messages == EXPECTED and conv.tools == [WEATHER] and "tools" not in conv.extra


def test_ms_swift_text_and_parallel_calls_join_one_assistant_turn(tmp_path):
    call = {"role": "tool_call", "content": json.dumps({"name": "get_weather", "arguments": ARGS})}
    row = {"messages": [EXPECTED[0], {"role": "assistant", "content": "Let me look."}, call, call,
                        {"role": "tool_response", "content": "22C"}, {"role": "tool_response", "content": "23C"},
                        EXPECTED[3]]}
    (conv,) = load_conversations([write(tmp_path, row)])
    assert [m["role"] for m in conv.messages] == ["user", "assistant", "tool", "tool", "assistant"]
    assert conv.messages[1]["content"] == "Let me look." and len(conv.messages[1]["tool_calls"]) == 2


def test_calls_are_trained_results_are_not_and_the_text_is_apply_chat_templates(qwen):
    ids, labels = encode_conversation(qwen, EXPECTED, [WEATHER])
    assert qwen.decode(ids) == qwen.apply_chat_template(EXPECTED, tools=[WEATHER], tokenize=False)
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>'
    assert trained(qwen, ids, labels) == [call, "It is 22C and sunny in Paris.<|im_end|>"]
    prompt = qwen.decode([i for i, label in zip(ids, labels) if label == IGNORE])
    assert "22C, sunny" in prompt and '"name": "get_weather", "description"' in prompt  # result and tool: context


def test_a_row_that_ends_with_a_call_trains_the_call(tmp_path, qwen):
    (conv,) = load_conversations([write(tmp_path, {"tools": [WEATHER], "messages": OPENAI["messages"][:2]})])
    rows, stats = encode_dataset(qwen, [conv], "Be brief.", max_length=1000)
    assert stats.kept == 1 and "get_weather" in qwen.decode([i for i in rows[0]["labels"] if i != IGNORE])
    assert "Be brief." in qwen.decode(rows[0]["input_ids"])


def test_a_template_without_tools_is_refused_with_the_row(tmp_path, tiny):
    path = write(tmp_path, {"query": "q", "response": "r"}, OPENAI)
    with pytest.raises(UserError, match=r"d\.jsonl:2: the model's chat template does not render tools: the "
                                        r"assistant's call of get_weather is missing"):
        encode_dataset(tiny, load_conversations([path]), None, max_length=1000)
    no_calls = {"tools": [WEATHER], "messages": [EXPECTED[0], EXPECTED[3]]}
    with pytest.raises(UserError, match=r"d\.jsonl:1: .*field 'tools' \(get_weather\) is missing"):
        encode_dataset(tiny, load_conversations([write(tmp_path, no_calls)]), None, max_length=1000)


def test_a_template_that_raises_on_tools_is_one_error(tmp_path, tiny):
    tok = load_tokenizer(resolve_model("tunewise-tiny"))
    tok.chat_template = ("{% for m in messages %}{% if m.tool_calls %}{{ raise_exception('no tools here') }}"
                         "{% endif %}{{ m.content + '<|im_end|>' }}{% endfor %}")  # replies end in a special token
    (conv,) = load_conversations([write(tmp_path, OPENAI)])
    with pytest.raises(UserError, match=r"d\.jsonl:1: the model's chat template cannot render this row's tool "
                                        r"calls \(TemplateError: no tools here\)"):
        encode_dataset(tok, [conv], None, max_length=1000)


def test_rows_without_tools_render_as_before(tiny, qwen):
    chat = [EXPECTED[0], EXPECTED[3]]
    for tok in (tiny, qwen):
        ids, _ = encode_conversation(tok, chat)
        assert tok.decode(ids) == tok.apply_chat_template(chat, tokenize=False)


def test_preference_rows_with_tools_are_refused(tmp_path):
    row = {**OPENAI, "rejected_response": "No idea."}
    with pytest.raises(UserError, match=r"d\.jsonl:1: tool calls and tools in preference rows are not supported"):
        load_preferences([write(tmp_path, row)])


def test_plan_trains_tool_rows_on_a_model_whose_template_has_tools(tmp_path, capsys):
    model = tmp_path / "tiny-tools"
    shutil.copytree(resolve_model("tunewise-tiny"), model)
    (model / "chat_template.jinja").write_text(qwen2_5_chat_template, encoding="utf-8")
    data = write(tmp_path, OPENAI, MS_SWIFT, SHAREGPT)
    assert run_cli("plan", "--model", model, "--dataset", data, "--output_dir", tmp_path / "plan") == 0
    assert "train data: 3/3 rows kept" in capsys.readouterr().out
    assert run_cli("plan", "--dataset", data, "--output_dir", tmp_path / "tiny") == 2  # the embedded ChatML template
    assert "d.jsonl:1: the model's chat template does not render tools" in capsys.readouterr().err
