"""README's settings table says what the code does.

Every ``LABLINK_*`` variable the code reads is a row of the table and every row names a
variable the code reads; each option in it is in the command's ``--help`` with its variable;
a switch's row says what the switch does in the words of its ``--help``; a literal default in
the table is the default ``Settings`` takes.
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import lablink
from lablink.bus.audit_stream import AUDIT_STREAM
from lablink.bus.subjects import REPLICAS_BUCKET, STREAM
from lablink.cli import app
from lablink.events import DATA_BUCKET
from lablink.eventstore.record_link import RECORD_STREAM
from lablink.instruments.protocol import REPORTS_STREAM, UPLOADS_STREAM
from lablink.logconfig import configure_logging
from lablink.settings import Settings

ROOT = Path(__file__).parent.parent
VARIABLE = re.compile(r"LABLINK_[A-Z0-9_]*[A-Z0-9]")
# Names that look like variables but are JetStream streams and buckets.
NOT_VARIABLES = {
    STREAM,
    REPORTS_STREAM,
    UPLOADS_STREAM,
    DATA_BUCKET,
    AUDIT_STREAM,
    RECORD_STREAM,
    REPLICAS_BUCKET,
}


def table_rows() -> list[list[str]]:
    """The settings table of README.md: its rows as [option, environment, default] cells."""
    text = (ROOT / "README.md").read_text()
    start = text.index("| option | environment | default |")
    rows = []
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split(" | ")])
    assert rows, "no settings table in README.md"
    return rows


def documented() -> dict[str, list[str]]:
    """Each variable the table names -> its row."""
    return {name: row for row in table_rows() for name in VARIABLE.findall(row[1])}


def literal_names() -> set[str]:
    """Every string in lablink/ that is a whole LABLINK_* name (what os.environ is asked)."""
    found: set[str] = set()
    for path in Path(lablink.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and VARIABLE.fullmatch(node.value)
            ):
                found.add(node.value)
    return found - NOT_VARIABLES


class RecordingEnviron(dict[str, str]):
    """os.environ that remembers every name asked for (names built at run time too)."""

    def __init__(self, base: dict[str, str]) -> None:
        super().__init__(base)
        self.asked: set[str] = set()

    def __contains__(self, key: object) -> bool:
        self.asked.add(str(key))
        return super().__contains__(key)

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return super().get(key, default)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> RecordingEnviron:
    recording = RecordingEnviron({k: v for k, v in os.environ.items() if "LABLINK_" not in k})
    monkeypatch.setattr(os, "environ", recording)
    return recording


def read_at_run_time(env: RecordingEnviron) -> set[str]:
    Settings.from_env()
    configure_logging()
    return {name for name in env.asked if VARIABLE.fullmatch(name)}


def test_every_variable_the_code_reads_is_in_the_table_and_every_row_is_read(
    clean_env: RecordingEnviron,
) -> None:
    read = literal_names() | read_at_run_time(clean_env)
    in_table = set(documented())
    assert sorted(read - in_table) == [], "read by the code, missing from README's table"
    assert sorted(in_table - read) == [], "in README's table, read nowhere"


def help_text(*command: str) -> str:
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    # One line, without the boxes Rich draws around the options.
    return re.sub(r"[│╭╮╰╯─\s]+", " ", result.output)


def test_each_option_is_in_its_commands_help_with_its_variable() -> None:
    checked = 0
    for option_cell, env_cell, default_cell in table_rows():
        options = re.findall(r"`(--[a-z-]+)`", option_cell)
        if not options:
            continue
        command = re.search(r"`lablink ([a-z]+)`", option_cell)
        text = help_text(command.group(1) if command else "serve")
        (name,) = VARIABLE.findall(env_cell)
        for option in options:
            assert option in text, f"{option} is not in the --help of its command"
            # The help names the variable that sets the same thing.
            described = re.search(rf"{option} .*?\[env ([A-Z_]+)\]", text)
            assert described is not None, (option, text)
            assert described.group(1) == name, (option, text)
            checked += 1
            # A switch: its row says what it does in the words of --help.
            switch = re.search(rf"{option} --no-{option[2:]} <bool> (.*?) \[env", text)
            if switch is not None:
                assert switch.group(1).lower() in default_cell.lower(), (option, default_cell)
    assert checked >= 5


def test_literal_defaults_in_the_table_are_the_defaults_of_the_code(
    clean_env: RecordingEnviron,
) -> None:
    settings = Settings.from_env()
    checked = 0
    for name, (_, env_cell, default_cell) in documented().items():
        literal = re.match(r"`([^`]+)`", default_cell)
        field = name.removeprefix("LABLINK_").lower()
        if literal is None or "=" in env_cell or not hasattr(settings, field):
            continue
        value = getattr(settings, field)
        if isinstance(value, int | float) and not isinstance(value, bool):
            assert float(literal.group(1)) == value, name
        else:
            assert literal.group(1) == str(value), name
        checked += 1
    assert checked >= 8


def test_realtime_is_what_the_row_says(clean_env: RecordingEnviron) -> None:
    """The row that said the opposite of the code: LABLINK_REALTIME=1 makes instrument
    operations take real time; unset, the simulated bench takes none."""
    assert Settings.from_env().realtime is False
    clean_env["LABLINK_REALTIME"] = "1"
    assert Settings.from_env().realtime is True
    (row,) = [r for r in table_rows() if "LABLINK_REALTIME" in r[1]]
    unset, _, when_set = row[2].partition("`1`:")
    assert "no real time" in unset
    assert "take real time" in when_set
    assert "no real time" not in when_set
