import textwrap

import pytest

from tunewise.errors import UserError
from tunewise.rewards import RewardArgs, plugins, reward_functions, try_rewards

PROMPT = [{"role": "user", "content": "23+15=?"}]
ROWS = [{"prompt": PROMPT, "solution": "38", "row_origin": "d.jsonl:1"},
        {"prompt": PROMPT, "solution": None, "row_origin": "d.jsonl:2"}]


def plugin(tmp_path, text, name="plugin.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return str(path)


def chat(*texts):
    return [[{"role": "assistant", "content": t}] for t in texts]


def test_builtins_with_default_weights():
    rewards, weights = reward_functions(["accuracy", "format"])
    assert [r.__name__ for r in rewards] == ["accuracy", "format"]
    assert weights == [1.0, 1.0]
    assert rewards[0]([PROMPT] * 2, chat("23+15=38", "no"), None, solution=["38", "38"]) == [1.0, 0.0]


def test_weights_are_numbers_one_per_reward():
    assert reward_functions(["accuracy", "format"], ["1", 0.5])[1] == [1.0, 0.5]
    with pytest.raises(UserError, match=r"--reward_weights has 1 value\(s\) for 2 reward\(s\) \(accuracy format\)"):
        reward_functions(["accuracy", "format"], [1.0])
    with pytest.raises(UserError, match="'x' is not a number"):
        reward_functions(["accuracy"], ["x"])


def test_unknown_name_lists_the_known_ones_and_suggests_the_closest():
    with pytest.raises(UserError) as e:
        reward_functions(["acuracy"])
    assert "--reward_funcs acuracy: no such reward" in str(e.value)
    assert "accuracy, cosine, format, repetition, soft_overlong" in str(e.value)
    assert "Did you mean 'accuracy'?" in str(e.value)
    with pytest.raises(UserError, match="name at least one reward"):
        reward_functions([])


def test_accuracy_names_the_first_row_without_a_solution():
    with pytest.raises(UserError) as e:
        reward_functions(["format", "accuracy"], rows=ROWS, dataset="d.jsonl")
    assert str(e.value).startswith("d.jsonl:2: --reward_funcs accuracy needs the field 'solution' in every row of "
                                   "d.jsonl")
    reward_functions(["format"], rows=ROWS)  # format needs no column
    with pytest.raises(UserError, match="^data, row 1: --reward_funcs cosine needs the field 'solution'"):
        reward_functions(["cosine"], rows=[{"prompt": PROMPT}], dataset="data")


def test_soft_overlong_settings_are_checked_when_it_is_named():
    with pytest.raises(UserError, match="needs --soft_cache_length"):
        reward_functions(["soft_overlong"])
    rewards, _ = reward_functions(["soft_overlong"], args=RewardArgs(max_completion_length=8, soft_cache_length=2))
    assert rewards[0](None, ["x", "y"], [[0] * 6, [0] * 8]) == [0.0, -1.0]


def test_plugin_registered_with_our_decorator(tmp_path):
    f = plugin(tmp_path, """
        from tunewise.rewards import register

        @register("exact_sum")
        def exact_sum(prompts, completions, completion_ids=None, solution=None, **kwargs):
            return [float(c[-1]["content"].endswith(s)) for c, s in zip(completions, solution)]

        @register
        def short(prompts, completions, **kwargs):
            return [None for _ in completions]
    """)
    rewards, _ = reward_functions(["exact_sum", "short"], plugin_files=[f])
    assert rewards[0]([PROMPT] * 2, chat("=38", "=39"), None, solution=["38", "38"]) == [1.0, 0.0]
    assert rewards[0].needs == ()  # solution has a default
    assert rewards[1]([PROMPT], chat("x"), None) == [None]


def test_plugin_in_ms_swift_form_runs_without_ms_swift(tmp_path):
    f = plugin(tmp_path, """
        import re
        from typing import List
        from swift.rewards import ORM, orms

        class CountdownORM(ORM):
            def __call__(self, completions, target, nums, **kwargs) -> List[float]:
                assert isinstance(completions[0], str)
                ids = kwargs["response_token_ids"]
                return [float(str(t) in c) + 0 * len(i) for c, t, i in zip(completions, target, ids)]

        class Scaled(ORM):
            def __call__(self, completions, **kwargs):
                return [self.args.repetition_max_penalty for _ in completions]

        orms['external_countdown'] = CountdownORM
        orms['scaled'] = Scaled
    """)
    rewards, _ = reward_functions(["external_countdown", "scaled"], plugin_files=[f],
                                  args=RewardArgs(repetition_max_penalty=-3.0))
    out = rewards[0]([PROMPT] * 2, chat("so 24", "so 25"), [[1], [2]], target=[24, 24], nums=[[1], [2]])
    assert out == [1.0, 0.0]
    assert rewards[0].needs == ("target", "nums")  # the columns it names: checked in every row
    assert rewards[1](None, ["a"], [[0]]) == [-3.0]  # built with args= the reward settings
    with pytest.raises(UserError, match="d.jsonl:1: --reward_funcs external_countdown needs the field 'target'"):
        reward_functions(["external_countdown"], plugin_files=[f], rows=ROWS[:1])
    # ms-swift 3.x's module name works too
    g = plugin(tmp_path, "from swift.plugin import ORM, orms\norms['old'] = type('Old', (ORM,), {})\n", "old.py")
    assert reward_functions(["old"], plugin_files=[g])[0][0].name == "old"


def test_plugin_file_errors_name_the_file_and_line(tmp_path):
    with pytest.raises(UserError, match="--external_plugins .*nope.py: no such file"):
        reward_functions(["x"], plugin_files=[str(tmp_path / "nope.py")])
    with pytest.raises(UserError, match="is a directory"):
        reward_functions(["x"], plugin_files=[str(tmp_path)])
    bad = plugin(tmp_path, "x = 1\ndef f(:\n", "syntax.py")
    with pytest.raises(UserError, match=r"syntax.py:2: syntax error"):
        reward_functions(["f"], plugin_files=[bad])
    raising = plugin(tmp_path, "from tunewise.rewards import register\nregister('early', print)\n"
                               "x = 1\nraise RuntimeError('boom')\n", "raising.py")
    with pytest.raises(UserError, match=r"raising.py:4: importing the plugin raised RuntimeError: boom"):
        reward_functions(["early"], plugin_files=[raising])
    assert "early" not in plugins.REGISTRY  # a plugin that fails to import registers nothing
    swift_only = plugin(tmp_path, "import os\nfrom swift.infer_engine import InferRequest\n", "swifty.py")
    with pytest.raises(UserError, match=r"swifty.py:2: imports swift.infer_engine, which is not installed. ms-swift"):
        reward_functions(["x"], plugin_files=[swift_only])


def test_plugin_that_registers_nothing_by_that_name(tmp_path):
    empty = plugin(tmp_path, "def my_reward(completions, **kw):\n    return [0.0] * len(completions)\n", "empty.py")
    with pytest.raises(UserError) as e:
        reward_functions(["my_reward"], plugin_files=[empty])
    assert "--reward_funcs my_reward: no such reward" in str(e.value)
    assert "empty.py registers no reward" in str(e.value)
    assert "orms['NAME'] = Class" in str(e.value)
    other = plugin(tmp_path, "from tunewise.rewards import register\nregister('mine', lambda **k: [])\n", "other.py")
    with pytest.raises(UserError, match="other.py registers mine.$"):
        reward_functions(["my_reward"], plugin_files=[other])


def test_plugin_that_raises_names_the_function_and_the_row(tmp_path):
    f = plugin(tmp_path, """
        from tunewise.rewards import register

        @register("picky")
        def picky(prompts, completions, solution, **kwargs):
            out = []
            for c, s in zip(completions, solution):
                out.append(1.0 / int(s))
            return out
    """)
    (picky,), _ = reward_functions(["picky"], plugin_files=[f])
    with pytest.raises(UserError) as e:
        picky([PROMPT] * 3, chat("a", "b", "c"), None, solution=["1", "0", "2"],
              row_origin=["d.jsonl:1", "d.jsonl:7", "d.jsonl:9"])
    msg = str(e.value)
    assert msg.startswith(f"reward function 'picky' ({tmp_path / 'plugin.py'}:8) raised ZeroDivisionError")
    assert "on row d.jsonl:7 (prompt '23+15=?', completion 'b')" in msg


def test_reward_returning_the_wrong_thing(tmp_path):
    f = plugin(tmp_path, """
        from tunewise.rewards import register
        register("short", lambda prompts, completions, **kw: [1.0])
        register("text", lambda prompts, completions, **kw: ["good"] * len(completions))
        register("inf", lambda prompts, completions, **kw: [float("inf")] * len(completions))
    """)
    (short, text, inf), _ = reward_functions(["short", "text", "inf"], plugin_files=[f])
    with pytest.raises(UserError, match="returned 1 values for 2 completions"):
        short(None, ["a", "b"])
    with pytest.raises(UserError, match="returned 'good' for row completion 1 of the batch"):
        text(None, ["a"])
    with pytest.raises(UserError, match="must be finite"):
        inf(None, ["a"])


def test_async_and_class_rewards(tmp_path):
    f = plugin(tmp_path, """
        from swift.rewards import AsyncORM, orms
        from tunewise.rewards import register

        class Later(AsyncORM):
            async def __call__(self, completions, **kwargs):
                return [len(c) for c in completions]
        orms["later"] = Later

        @register("counted")
        class Counted:
            def __init__(self, args):
                self.n = args.repetition_n_grams
            def __call__(self, prompts, completions, **kwargs):
                return [self.n] * len(completions)
    """)
    (later, counted), _ = reward_functions(["later", "counted"], plugin_files=[f])
    assert later(None, ["ab", "abc"], [[0], [0]]) == [2.0, 3.0]
    assert counted(None, ["a"]) == [3.0]


def test_a_plugin_may_replace_a_builtin(tmp_path):
    f = plugin(tmp_path, """
        from swift.rewards import ORM, orms
        class A(ORM):
            def __call__(self, completions, **kw):
                return [0.5] * len(completions)
        orms['accuracy'] = A
    """)
    (acc,), _ = reward_functions(["accuracy"], plugin_files=[f])
    assert acc.source.endswith("plugin.py") and acc(None, ["x"]) == [0.5]


def test_try_rewards_calls_each_reward_on_the_first_rows(tmp_path):
    f = plugin(tmp_path, "from tunewise.rewards import register\n"
                         "register('boom', lambda prompts, completions, **kw: 1 / 0)\n")
    rewards, _ = reward_functions(["accuracy", "boom"], plugin_files=[f])
    with pytest.raises(UserError, match=r"'boom' .*plugin.py:2\) raised ZeroDivisionError.* on row d.jsonl:1"):
        try_rewards(rewards, ROWS[:1])
    try_rewards(rewards[:1], ROWS[:1])
