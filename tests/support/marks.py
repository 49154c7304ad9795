"""The suite's markers, checked while the tests run.

``nats`` (the test starts a nats-server), ``e2e`` (it starts a ``lablink`` process) and
``slow`` (it takes more than a few seconds) let a developer run the fast core alone:
``pytest -m "not nats and not e2e and not slow"``. A mark that is forgotten would put a test
that needs a nats-server into that core, so ``tests/conftest.py`` watches every child process a
test starts (``subprocess.Popen``, which ``asyncio``'s subprocesses use too) and fails the test
whose child needs a mark it does not carry.

A ``lablink`` child's own children are out of sight: a ``lablink serve``, ``scheduler`` or
``relay`` without ``LABLINK_NATS_URL`` and with the bus on starts a private nats-server, so
such a child needs ``nats`` as well as ``e2e``.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

# Commands that start a private nats-server when no LABLINK_NATS_URL is set and the bus is on.
PRIVATE_BUS_COMMANDS = {"serve", "scheduler", "relay"}
BUS_OFF = {"off", "0", "false", "no"}


def argv_of(args: Any, *, shell: bool = False) -> list[str]:
    """A Popen ``args`` as a list of strings."""
    if isinstance(args, str | bytes | os.PathLike):
        text = os.fsdecode(args)
        return shlex.split(text) if shell else [text]
    return [os.fsdecode(arg) for arg in args]


def needed_marks(argv: Sequence[str], env: Mapping[str, str] | None) -> set[str]:
    """The marks a test must carry to start this child (``env``: the child's, None for ours)."""
    if not argv:
        return set()
    program = Path(argv[0]).name
    if program == "nats-server":
        return {"nats"}
    command = list(argv[1:])
    if program.startswith("python") and command[:2] in (["-m", "lablink"], ["-m", "lablink.cli"]):
        program, command = "lablink", command[2:]
    if program != "lablink":
        return set()
    environ = os.environ if env is None else env
    bus_on = environ.get("LABLINK_NATS", "").lower() not in BUS_OFF
    private_bus = bus_on and not environ.get("LABLINK_NATS_URL")
    if command and command[0] in PRIVATE_BUS_COMMANDS and private_bus:
        return {"e2e", "nats"}
    return {"e2e"}


class ChildWatch:
    """Checks each child a test starts against the test's marks; remembers what it refused,
    so a refusal that a caller swallowed still fails the test at teardown."""

    def __init__(self, test: str, marks: set[str]) -> None:
        self.test = test
        self.marks = marks
        self.refused: list[str] = []

    def check(self, args: Any, kwargs: Mapping[str, Any]) -> None:
        argv = argv_of(args, shell=bool(kwargs.get("shell")))
        missing = needed_marks(argv, kwargs.get("env")) - self.marks
        if missing:
            marks = ", ".join(f"@pytest.mark.{name}" for name in sorted(missing))
            shown = shlex.join([Path(argv[0]).name, *argv[1:3]])
            message = f"{self.test} starts {shown} without {marks}"
            self.refused.append(message)
            pytest.fail(message, pytrace=False)

    def finish(self) -> None:
        """At the test's teardown: fails it for every refusal, even one a caller swallowed."""
        if self.refused:
            pytest.fail("\n".join(self.refused), pytrace=False)

    def popen(self) -> type[subprocess.Popen[Any]]:
        """A ``subprocess.Popen`` that asks this watch first."""
        watch = self

        class WatchedPopen(subprocess.Popen[Any]):
            def __init__(self, args: Any, *rest: Any, **kwargs: Any) -> None:
                watch.check(args, kwargs)
                super().__init__(args, *rest, **kwargs)

        return WatchedPopen
