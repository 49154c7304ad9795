"""`lablink nats …`: the bus's users and server configuration.

A command-line module beside ``cli``, not inside ``bus``: it reads agents' lab.toml files
(``equipment_agent.config``), and the bus sits below the agents."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from lablink.bus.access import private_folder
from lablink.bus.credentials import Credentials
from lablink.bus.private import running_server_pid
from lablink.bus.serverconf import AgentSpec, cluster_config
from lablink.errors import BusCredentialsError

app = typer.Typer(help="The bus: NATS users, their passwords, the cluster configuration.")


def _data_dir(data_dir: Path | None) -> Path:
    from lablink.settings import Settings

    return Settings.from_env(data_dir=data_dir).data_dir


def _credentials(data_dir: Path | None) -> Credentials:
    folder = private_folder(_data_dir(data_dir))
    credentials = Credentials.find(folder)
    if credentials is None:
        typer.echo(
            f"lablink: no bus credentials in {folder}: `lablink serve` makes them on its"
            " first start",
            err=True,
        )
        raise typer.Exit(2)
    return credentials


@app.command("config")
def config(
    agents: Annotated[
        list[Path] | None,
        typer.Option(
            "--agents", help="A lab.toml whose agent gets a user (repeat for several agents)."
        ),
    ] = None,
) -> None:
    """Print the 3-node cluster configuration (deploy/nats-server.conf): the same users and
    permissions as the private server, passwords from the nodes' environment."""
    from lablink.equipment_agent.config import ConfigError, load_config

    specs: list[AgentSpec] = []
    for path in agents or []:
        try:
            lab = load_config(path)
        except ConfigError as exc:
            raise typer.BadParameter(str(exc), param_hint="--agents") from exc
        specs.append(AgentSpec(lab.agent_id, tuple(i.id for i in lab.instruments)))
    source = " --agents ".join(str(p) for p in agents or [])
    typer.echo(cluster_config(specs, source=source), nl=False)


@app.command("users")
def users(
    data_dir: Annotated[
        Path | None, typer.Option(help="Where scheduler.db lives [env LABLINK_DATA_DIR].")
    ] = None,
) -> None:
    """The private server's users, their roles and instruments (never their passwords:
    those are in data/nats/credentials.json, readable by LabLink's own OS user only)."""
    credentials = _credentials(data_dir)
    try:
        found = credentials.users()
    except BusCredentialsError as exc:
        typer.echo(f"lablink: {exc}", err=True)
        raise typer.Exit(2) from None
    table = Table(title=f"NATS users in {credentials.path}")
    for column in ("user", "role", "instruments"):
        table.add_column(column)
    for user in sorted(found.values(), key=lambda u: (u.role, u.name)):
        table.add_row(user.name, user.role, ", ".join(user.instruments) or "—")
    Console(width=200).print(table)


@app.command("rotate")
def rotate(
    names: Annotated[
        list[str] | None, typer.Argument(help="The users to rotate [default: every user].")
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Where scheduler.db lives [env LABLINK_DATA_DIR].")
    ] = None,
) -> None:
    """Give users new random passwords. Stop `lablink serve` first: its connections (and
    those of running agents) use the current ones; every process of this data directory
    reads the new ones when it starts."""
    credentials = _credentials(data_dir)
    pid = running_server_pid(credentials.folder)
    if pid is not None:
        typer.echo(
            f"lablink: the private nats-server of {credentials.folder} is running (pid {pid}):"
            " stop `lablink serve` before rotating its passwords",
            err=True,
        )
        raise typer.Exit(1)
    try:
        rotated = credentials.rotate(names or [])
    except BusCredentialsError as exc:
        typer.echo(f"lablink: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"new passwords for {', '.join(rotated)} in {credentials.path}")
