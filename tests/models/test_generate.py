"""tunewise.models.generate: one way to a reply (prompt, sampling, stop, finish reason) for infer, eval and serve."""
import pytest

from tunewise.args import Sampling
from tunewise.models.generate import Generator, Reply, generation_config, greedy_generations, reply_of

Q = [{"role": "user", "content": "你是谁？"}]


class Digits:
    """A tokenizer stand-in: token ids decode to themselves."""

    @staticmethod
    def decode(ids, skip_special_tokens=True):
        return " ".join(map(str, ids))


def test_the_finish_reason_and_the_token_counts():
    assert reply_of(Digits, 5, [7, 8, 2], {2}) == Reply("7 8", "stop", 5, 3)  # end-of-turn: counted, not shown
    assert reply_of(Digits, 5, [7, 2, 0, 0], {2, 3}) == Reply("7", "stop", 5, 2)  # a batch's padding after it: no part
    assert reply_of(Digits, 5, [7, 8, 9], {2}) == Reply("7 8 9", "length", 5, 3)  # max_new_tokens reached
    assert reply_of(Digits, 5, [], {2}) == Reply("", "length", 5, 0)


def test_the_sampling_flags_as_transformers_takes_them():
    greedy = generation_config(Sampling(temperature=0, max_new_tokens=7, repetition_penalty=1.1), [2, 3], 0)
    assert not greedy.do_sample and greedy.max_new_tokens == 7 and greedy.eos_token_id == [2, 3]
    assert greedy.repetition_penalty == 1.1 and greedy.pad_token_id == 0
    sampled = generation_config(Sampling(temperature=0.7, top_p=0.8, top_k=20), [2], None)
    assert sampled.do_sample and (sampled.temperature, sampled.top_p, sampled.top_k) == (0.7, 0.8, 20)


@pytest.fixture(scope="module")
def generator(base_model):
    model, tokenizer = base_model
    return Generator(model, tokenizer)


def test_a_reply_stops_at_the_end_of_turn_or_at_max_new_tokens(generator):
    whole = generator.chat(Q, Sampling(max_new_tokens=200))
    assert whole.finish_reason == "stop" and whole.text and whole.prompt_tokens == len(generator.prompt_ids(Q))
    cut = generator.chat(Q, Sampling(max_new_tokens=2))
    assert cut.finish_reason == "length" and cut.completion_tokens == 2 and whole.text.startswith(cut.text)
    pieces = list(generator.stream(Q, Sampling(max_new_tokens=200)))
    assert pieces[-1] == whole and "".join(pieces[:-1]).strip() == whole.text.strip()


def test_seeded_sampling_is_reproducible(generator):
    sampling = Sampling(temperature=1.0, top_p=0.95, top_k=50, seed=7, max_new_tokens=12)
    assert generator.chat(Q, sampling) == generator.chat(Q, sampling)


def test_batched_greedy_replies_end_as_the_single_ones_do(generator, base_model):
    model, tokenizer = base_model
    side = tokenizer.padding_side
    conversations = [Q, [{"role": "user", "content": "Please introduce yourself."}]]
    batch = greedy_generations(model, tokenizer, conversations, max_new_tokens=3, system="Be brief.")
    assert [g.finish_reason for g in batch] == ["length", "length"] and [g.completion_tokens for g in batch] == [3, 3]
    assert batch[0].prompt_tokens == len(Generator(model, tokenizer, "Be brief.").prompt_ids(Q))
    assert tokenizer.padding_side == side  # left padding only while generating
    full = generator.replies(conversations, max_new_tokens=200, batch_size=1)
    assert all(g.finish_reason == "stop" for g in full)
