from tunewise.errors import brief


def test_brief_quotes_a_library_error_in_one_line_even_an_empty_one():
    assert brief(ValueError("not JSON\nat line 3")) == "ValueError: not JSON"
    assert brief(OSError()) == "OSError: "  # str(e) is "": no IndexError on the way to the user's message
    assert brief(RuntimeError("x" * 500), 10) == "RuntimeError: " + "x" * 10
