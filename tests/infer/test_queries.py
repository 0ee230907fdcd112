"""`tunewise infer --query Q1 Q2 ...`: several questions answered in order by one model load (the demo asks three)."""
from cli_runs import run_cli

QUESTIONS = ["你是谁？", "Who are you?", "12+34=?"]


def test_several_queries_answer_each_in_its_own_conversation(capsys):
    singles = []
    for q in QUESTIONS:
        assert run_cli("infer", "--model", "tunewise-tiny", "--query", q, "--stream", "false") == 0
        singles.append(capsys.readouterr().out)
    assert singles[2] == "12+34=46\n"  # one query: the answer alone, as before
    for stream in ("false", "true"):
        assert run_cli("infer", "--model", "tunewise-tiny", "--query", *QUESTIONS, "--stream", stream) == 0
        out = capsys.readouterr().out
        # every answer equals the one a process of its own gives: no history carries from one question to the next
        assert out == "".join(f"<<< {q}\n>>> {a}" for q, a in zip(QUESTIONS, singles)), out
