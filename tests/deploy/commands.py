"""A `lablink ...` command line checked against the real command, as the shell would run it:
Typer's click command (``typer.main.get_command``; Typer 0.29 carries its own copy of click)
parses it with resilient_parsing=False, so a misspelt subcommand or option, a missing
required one or a stray argument raises its UsageError (a ``typer.TyperException``)."""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from typing import Any

import typer
from typer.core import TyperGroup

from lablink.cli import app

Context = Any  # typer's vendored click Context


def parse(argv: Sequence[str]) -> Context:
    """The context of the leaf command ``argv`` (without the program name) runs."""
    command = typer.main.get_command(app)
    context = command.make_context("lablink", list(argv), resilient_parsing=False)
    while isinstance(command, TyperGroup):
        rest = [*context._protected_args, *context.args]
        name, found, rest = command.resolve_command(context, rest)
        assert name is not None, f"no subcommand in {argv!r}"
        assert found is not None, f"no subcommand in {argv!r}"
        context = found.make_context(name, rest, parent=context, resilient_parsing=False)
        command = found
    return context


def lablink_argv(line: str) -> list[str] | None:
    """The arguments of the `lablink` a shell line runs (`/opt/lablink/venv/bin/lablink ...`,
    also after `sudo -u lablink` or VAR=value words; a bare `lablink` only as the command
    itself, since `lablink` is a user and a unit's name too), or None if it runs none. A
    redirection, a pipe or a comment ends them."""
    words = shlex.split(line, comments=True)
    start = 0
    while start < len(words) and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[start]):
        start += 1
    for i, word in enumerate(words):
        if word.endswith("/bin/lablink") or (word == "lablink" and i == start):
            argv = []
            for arg in words[i + 1 :]:
                if arg in {"|", "&&", ";", "||"} or arg.startswith((">", "<", "2>")):
                    break
                argv.append(arg)
            return argv
    return None
