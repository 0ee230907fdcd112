"""tunewise.data.template: the one chat-prompt renderer."""
import pytest

from tunewise.data.template import prompt_ids, render, template_ids, with_system
from tunewise.models.load import load_tokenizer, resolve_model


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(resolve_model("tunewise-tiny"))


def test_the_system_prompt_is_added_once_and_a_conversations_own_wins(tok):
    user = [{"role": "user", "content": "Who are you?"}]
    own = [{"role": "system", "content": "Mine."}] + user
    assert with_system(user, "Given.")[0] == {"role": "system", "content": "Given."}
    assert with_system(own, "Given.") == own and with_system(user, None) == user
    text = render(tok, user, "Given.")
    assert text == tok.apply_chat_template(with_system(user, "Given."), tokenize=False, add_generation_prompt=True)
    assert text.count("Given.") == 1 and text.endswith("<|im_start|>assistant\n")
    assert render(tok, [], None) == ""


def test_prompt_ids_are_the_rendered_text_and_template_ids_as_trl_makes_them(tok):
    user = [{"role": "user", "content": "12+34=?"}]
    assert prompt_ids(tok, user, "S.") == tok(render(tok, user, "S."), add_special_tokens=False)["input_ids"]
    assert template_ids(tok, user, generation_prompt=True) == prompt_ids(tok, user)
