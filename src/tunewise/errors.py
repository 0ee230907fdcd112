"""The one exception type for bad user input: the CLI prints its message as one paragraph and exits with 2."""


class UserError(Exception):
    """Input the user can fix (a flag, a file, a data row). The message names the file, line and field."""

    exit_code = 2
