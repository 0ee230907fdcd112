"""What cli.py needs of a command: the dataclass its flags fill, and what it does with them. cli.py prints
--help, parses the flags and turns a UserError into one paragraph and exit code 2, once for every command."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class Command:
    args: type | Callable[[list[str]], type]  # the flags' dataclass, or a function of argv that picks one (plan)
    run: Callable[..., int | None]  # run(args, sources, argv): the parsed flags, where each came from, the raw flags
    help: Callable[[type], str] | None = None  # the --help text from the chosen class; default: its flag list
    extra_flags: dict = field(default_factory=dict)  # flags read besides the dataclass's (name -> default)
    parse: Callable[[list[str]], tuple] | None = None  # a command that reads its own argv: -> (args, sources)

    def args_class(self, argv: list[str]) -> type:
        return self.args if isinstance(self.args, type) else self.args(argv)
