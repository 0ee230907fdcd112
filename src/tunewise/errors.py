"""The exceptions the CLI turns into one paragraph and an exit code, without a traceback."""
from __future__ import annotations

from collections.abc import Iterable


class UserError(Exception):
    """Input the user can fix (a flag, a file, a data row). The message names the file, line and field."""

    exit_code = 2


def raise_problems(problems: Iterable[str], intro: str = "", sep: str = " ", end: str = "") -> None:
    """Every problem found at once, as one UserError: `intro`, the problems joined by `sep`, then `end`. Nothing
    happens when there are none. Each check collects its sentences in a list and ends with this one call."""
    problems = list(problems)
    if problems:
        raise UserError(intro + sep.join(problems) + end)


def brief(error: BaseException, limit: int = 300) -> str:
    """"Type: first line of the message" (cut to `limit` characters) for quoting a library's error in a UserError."""
    lines = str(error).splitlines()
    return f"{type(error).__name__}: {lines[0][:limit] if lines else ''}"


class Stopped(Exception):
    """A run that stopped because it was asked to (SIGTERM, SIGINT) after saving what it had: not an error. The CLI
    prints the message and exits with `exit_code` (128 + the signal: 143 for SIGTERM, 130 for SIGINT)."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code
