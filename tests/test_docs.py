"""Docs are part of the product: every route and every CLI command is documented."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import typer

from lablink.cli import app

ROOT = Path(__file__).parent.parent


async def test_every_route_is_in_docs_api(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    documented = (ROOT / "docs" / "api.md").read_text()
    missing = [path for path in schema["paths"] if f" {path}" not in documented]
    assert missing == []


def test_every_cli_command_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    command = typer.main.get_command(app)
    names: list[str] = []
    for name, sub in command.commands.items():  # type: ignore[attr-defined]
        subcommands = getattr(sub, "commands", None)
        names += [f"{name} {s}" for s in subcommands] if subcommands else [name]
    missing = [n for n in names if not re.search(rf"`lablink {n}\b", readme)]
    assert missing == []


def test_readme_opens_with_the_two_commands_and_ci_runs_the_second() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)
    run, test = blocks[0], blocks[1]
    assert run.endswith("lablink serve")
    assert test in (ROOT / ".ci" / "run").read_text()
