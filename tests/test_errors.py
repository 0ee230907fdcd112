from tunewise.errors import brief


def test_brief_quotes_a_library_error_in_one_line_even_an_empty_one():
    assert brief(ValueError("not JSON\nat line 3")) == "ValueError: not JSON"
    assert brief(OSError()) == "OSError: "  # str(e) is "": no IndexError on the way to the user's message
    assert brief(RuntimeError("x" * 500), 10) == "RuntimeError: " + "x" * 10


def test_raise_problems_reports_every_problem_at_once_and_nothing_when_there_are_none():
    import pytest

    from tunewise.errors import UserError, raise_problems

    raise_problems([])
    raise_problems(iter(()))
    with pytest.raises(UserError) as e:
        raise_problems(["--a 0: must be at least 1.", "--b x: expected one of y, z."])
    assert str(e.value) == "--a 0: must be at least 1. --b x: expected one of y, z."
    with pytest.raises(UserError) as e:
        raise_problems(["a = 1", "b = 2"], "config.json: ", "; ", ".")
    assert str(e.value) == "config.json: a = 1; b = 2."
    assert e.value.exit_code == 2
