"""--template (tunewise.data.templates): for every family only the assistant replies and their end-of-turn token
are trained; a base model without a template is told to pick one; a template is checked before it is used; the
template trained with is the one a checkpoint's infer uses."""
import json

import pytest
from transformers import AutoTokenizer

from base_models import base_model_without_template
from cli_runs import run_cli
from tunewise.args import TEMPLATE_NAMES
from tunewise.data.encode import IGNORE, encode_conversation, encode_dataset
from tunewise.data.formats import Conversation
from tunewise.data.templates import TEMPLATES, drops_system, turn_end
from tunewise.errors import UserError
from tunewise.models.load import end_of_turn_ids, load_tokenizer, resolve_model

CONVERSATION = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+3?"},
                {"role": "assistant", "content": "5"}, {"role": "user", "content": "And 4+4?"},
                {"role": "assistant", "content": "8, of course."}]


@pytest.fixture(scope="module")
def base_model_dir(tmp_path_factory):
    return base_model_without_template(tmp_path_factory.mktemp("base-model"))


def test_the_registry_is_the_flag_choices():
    assert tuple(TEMPLATES) == TEMPLATE_NAMES


@pytest.mark.parametrize("name, end", [("chatml", "<|im_end|>"), ("qwen", "<|im_end|>"), ("qwen3", "<|im_end|>"),
                                       ("llama3", "<|eot_id|>"), ("plain", "<|im_end|>")])
def test_only_the_replies_and_their_end_of_turn_token_are_trained(name, end, base_model_dir):
    tok = load_tokenizer(str(base_model_dir), name)
    assert turn_end(tok) == end  # plain: the tokenizer's eos (the embedded tokenizer's eos is <|im_end|>)
    assert tok.convert_tokens_to_ids(end) in end_of_turn_ids(tok)  # generation stops there
    ids, labels = encode_conversation(tok, CONVERSATION)
    assert len(ids) == len(labels)
    trained = tok.decode([i for i, label in zip(ids, labels) if label != IGNORE])
    lead = " " if name == "plain" else ""  # plain's reply follows "Assistant:" after a space
    assert trained == f"{lead}5{end}{lead}8, of course.{end}"
    # the untrained part is everything else, the system prompt included, exactly as rendered
    assert tok.decode(ids) == tok.apply_chat_template(CONVERSATION, tokenize=False)


def test_qwen3_trains_the_reasoning_with_the_reply(base_model_dir):
    tok = load_tokenizer(str(base_model_dir), "qwen3")
    messages = [{"role": "user", "content": "2+3?"},
                {"role": "assistant", "content": "5", "reasoning_content": "Two plus three is five."}]
    ids, labels = encode_conversation(tok, messages)
    assert tok.decode([i for i, label in zip(ids, labels) if label != IGNORE]) == \
        "<think>\nTwo plus three is five.\n</think>\n\n5<|im_end|>"
    prompt = tok.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True, enable_thinking=False)
    assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")  # Qwen3's non-thinking switch


def test_a_base_model_without_a_template_is_told_to_name_one(base_model_dir):
    with pytest.raises(UserError, match="has no chat template .*--template NAME .*chatml, qwen, qwen3, llama3, plain"):
        load_tokenizer(str(base_model_dir))


def test_a_template_whose_tokens_the_vocabulary_lacks_is_refused():
    with pytest.raises(UserError, match="--template llama3: .* no special token <|start_header_id|>"):
        load_tokenizer(resolve_model("tunewise-tiny"), "llama3")


def test_a_template_that_drops_the_system_message_is_not_given_one():
    tok = load_tokenizer(resolve_model("tunewise-tiny"))
    tok.chat_template = ("{%- for m in messages if m['role'] != 'system' %}{{ '<|im_start|>' + m['role'] + '\\n' + "
                         "m['content'] + '<|im_end|>\\n' }}{%- endfor %}"
                         "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}")
    assert drops_system(tok)
    rows = [Conversation([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}], "d.jsonl:1")]
    assert encode_dataset(tok, rows, None, 512)[1].kept == 1  # no system prompt anywhere: fine
    with pytest.raises(UserError, match="--system: the chat template leaves system messages out"):
        encode_dataset(tok, rows, "Be brief.", 512)
    with_system = [Conversation([{"role": "system", "content": "Be brief."}, *rows[0].messages], "d.jsonl:7")]
    with pytest.raises(UserError, match="d.jsonl:7: its system message"):
        encode_dataset(tok, with_system, None, 512)


@pytest.mark.slow  # trains a model for more than a few seconds
def test_a_base_model_trained_with_a_template_keeps_it_in_every_checkpoint(base_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli("sft", "--model", base_model_dir, "--template", "llama3", "--dataset", "self_cognition#8",
                   "--model_name", "N", "--model_author", "A", "--max_steps", 2, "--save_steps", 2,
                   "--report_to", "none", "--output_dir", out, "--add_version", "false") == 0
    assert json.loads((out / "args.json").read_text())["args"]["template"] == "llama3"
    saved = AutoTokenizer.from_pretrained(out / "checkpoint-2")
    assert saved.chat_template == TEMPLATES["llama3"].jinja
    capsys.readouterr()
    assert run_cli("infer", "--adapters", out / "checkpoint-2", "--query", "hi", "--max_new_tokens", 4) == 0
    assert capsys.readouterr().out.strip()


def test_rows_carry_reasoning_content_to_the_qwen3_template(base_model_dir, tmp_path):
    from tunewise.data.formats import load_conversations

    data = tmp_path / "r.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "2+3?"},
                                             {"role": "assistant", "content": "5", "reasoning_content": "2+3=5."}]})
                    + "\n" + json.dumps({"messages": [{"role": "user", "content": "hi"},
                                                      {"role": "assistant", "content": "yo", "reasoning_content": 7}]}))
    with pytest.raises(UserError, match=r"r.jsonl:2: field 'messages\[1\].reasoning_content' must be a string"):
        load_conversations([str(data)], [], [], 42)
    data.write_text(data.read_text().splitlines()[0] + "\n")
    (conv,) = load_conversations([str(data)], [], [], 42)
    tok = load_tokenizer(str(base_model_dir), "qwen3")
    rows, _ = encode_dataset(tok, [conv], None, 512)
    trained = [i for i, label in zip(rows[0]["input_ids"], rows[0]["labels"]) if label != IGNORE]
    assert tok.decode(trained) == "<think>\n2+3=5.\n</think>\n\n5<|im_end|>"
