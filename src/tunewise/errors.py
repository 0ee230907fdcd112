"""The exceptions the CLI turns into one paragraph and an exit code, without a traceback."""


class UserError(Exception):
    """Input the user can fix (a flag, a file, a data row). The message names the file, line and field."""

    exit_code = 2


class Stopped(Exception):
    """A run that stopped because it was asked to (SIGTERM, SIGINT) after saving what it had: not an error. The CLI
    prints the message and exits with `exit_code` (128 + the signal: 143 for SIGTERM, 130 for SIGINT)."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code
