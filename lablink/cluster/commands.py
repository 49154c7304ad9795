"""`lablink cluster …`: moving a single-node log into the cluster's record, and the cluster's
state.

Both connect as the other NATS commands do: ``LABLINK_NATS_URL`` (the servers, comma
separated) and ``LABLINK_NATS_USER``/``_PASSWORD``/``_CREDENTIALS``/``_TLS_*``, ``--nats-url``
overriding the servers. ``import`` makes the stream with ``LABLINK_NATS_REPLICAS`` replicas.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import nats.errors
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from lablink.bus.options import inbox_prefix
from lablink.cluster.importer import BATCH, ImportReport, import_log
from lablink.cluster.status import ClusterStatus, read_status
from lablink.eventstore.record_link import (
    MAX_BATCH,
    RECORD_STREAM,
    ApiError,
    JetStreamOptions,
    close,
    connect,
)

app = typer.Typer(
    help="Cluster mode: move a single-node log into the cluster's record; the cluster's state."
)
console = Console(stderr=True)

# Exit codes: the cluster answered but is not healthy (status), or the import was refused or
# failed; the command could not run as asked (no servers, a data directory in use).
EXIT_UNHEALTHY = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT

NatsUrl = Annotated[
    str | None,
    typer.Option(
        "--nats-url", help="The cluster's servers, comma separated [env LABLINK_NATS_URL]."
    ),
]


def record_options(nats_url: str | None, data_dir: Path | None = None) -> JetStreamOptions:
    from lablink.settings import Settings

    try:
        settings = Settings.from_env(data_dir=data_dir)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    url = nats_url or settings.nats_url
    servers = tuple(u.strip() for u in (url or "").split(",") if u.strip())
    if not servers:
        raise typer.BadParameter("no NATS servers: set LABLINK_NATS_URL or pass --nats-url")
    user = settings.nats_user
    return JetStreamOptions(
        servers=servers,
        user=user,
        password=settings.nats_password,
        credentials=settings.nats_credentials,
        tls_ca=settings.nats_tls_ca,
        tls_cert=settings.nats_tls_cert,
        tls_key=settings.nats_tls_key,
        # A user allowed only its own inbox (subscriber) must say so; the scheduler's is in it.
        inbox_prefix=inbox_prefix(user) if user else None,
        replicas=settings.nats_replicas,
    )


@app.command("import")
def import_(
    data_dir: Annotated[
        Path,
        typer.Option(help="The single-node data directory whose scheduler.db is imported."),
    ],
    nats_url: NatsUrl = None,
    resume: Annotated[
        bool,
        typer.Option(
            help="Continue an import that stopped: the stream must hold the log's first"
            " events, as an earlier import left them."
        ),
    ] = False,
    batch: Annotated[
        int,
        typer.Option(min=1, max=MAX_BATCH, help="Events per atomic batch."),
    ] = BATCH,
) -> None:
    """Copy a single-node log into the cluster's record (the stream LABLINK_LOG): the same
    events, ids, order and positions. Refuses a stream that holds anything (but --resume).
    Stop `lablink serve` on DIR first: the data directory is locked while importing."""
    from lablink.datadir import DataDirLock
    from lablink.errors import ClusterError, DataDirError, StorageError

    options = record_options(nats_url, data_dir)
    source = data_dir / "scheduler.db"
    try:
        lock = DataDirLock(data_dir).acquire()
    except DataDirError as exc:
        typer.echo(f"lablink: {exc}: stop `lablink serve` on it before importing", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    try:
        with Progress(
            TextColumn(f"importing {source} into {options.stream}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("import", total=None)
            reached = [0]

            def shown(done: int, total: int) -> None:
                reached[0] = done
                progress.update(task, completed=done, total=total)

            report = asyncio.run(import_log(source, options, resume=resume, progress=shown))
    except KeyboardInterrupt:
        typer.echo(
            f"lablink: import stopped; {options.stream} holds the log's first {reached[0]}"
            " events or one batch more (whole batches): continue with `lablink cluster import"
            f" --data-dir {data_dir} --resume`",
            err=True,
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except (ClusterError, StorageError) as exc:
        typer.echo(f"lablink: {exc}", err=True)
        raise typer.Exit(EXIT_UNHEALTHY) from None
    except (ApiError, nats.errors.Error, OSError, TimeoutError) as exc:
        # Nothing or whole batches were recorded: --resume continues from what is there.
        typer.echo(f"lablink: importing into {options.shown()} failed: {exc!r}", err=True)
        raise typer.Exit(EXIT_UNHEALTHY) from None
    finally:
        lock.release()
    typer.echo(_imported(report))


def _imported(report: ImportReport) -> str:
    resumed = f", resumed after {report.resumed_after}" if report.resumed_after else ""
    return (
        f"imported {report.imported} events into {report.stream}{resumed}:"
        f" sequences 1..{report.last_sequence} are the log's positions 1..{report.events}"
    )


@app.command("status")
def status(
    nats_url: NatsUrl = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON, not tables.")] = False,
    stream: Annotated[str, typer.Option(help="The record's stream.")] = RECORD_STREAM,
) -> None:
    """The servers, the record's stream and its replicas, the lease holder, and each LabLink
    replica's lag. Exit code 1 when the stream is missing or not all of its replicas are
    current."""
    options = record_options(nats_url)

    async def read() -> ClusterStatus:
        nc = await connect(options, name="lablink-cluster-status", within=10.0)
        try:
            return await read_status(nc, stream, configured=options.servers)
        finally:
            await close(nc)

    try:
        found = asyncio.run(read())
    except Exception as exc:  # any failure to read is this command's answer, named
        typer.echo(f"lablink: cannot read the cluster at {options.shown()}: {exc!r}", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    if as_json:
        typer.echo(json.dumps(found.as_json(), indent=2))
    else:
        _print(found)
    if found.problems():
        raise typer.Exit(EXIT_UNHEALTHY)


def _print(found: ClusterStatus) -> None:
    out = Console(width=160)
    out.print(
        f"connected to {found.connected_to or '?'} (nats-server {found.version}) of"
        f" {', '.join(found.configured)}; the cluster advertises {', '.join(found.urls) or '—'}"
    )
    if found.stream is None:
        out.print("[red]the record's stream does not exist[/red]")
        return
    s = found.stream
    table = Table(title=f"stream {s.name}: R{s.replicas}, cluster {s.cluster or '—'}")
    for column in ("server", "role", "current", "lag", "last heard"):
        table.add_column(column)
    for server in found.servers:
        current = "offline" if server.offline else ("yes" if server.current else "NO")
        heard = "—" if server.active_seconds is None else f"{server.active_seconds:.1f} s ago"
        table.add_row(server.name, server.role, current, str(server.lag), heard)
    out.print(table)
    out.print(f"messages {s.messages}, sequences {s.first_sequence}..{s.last_sequence}")
    if found.lease is None:
        out.print("lease: nobody holds it")
    else:
        lease = found.lease
        state = "EXPIRED" if lease.expired else "held"
        out.print(
            f"lease: {state} by {lease.replica}, epoch {lease.epoch}, last renewed"
            f" {lease.age_seconds:.1f} s ago (ttl {lease.ttl_seconds:g} s, sequence"
            f" {lease.sequence})"
        )
    if found.replicas is None:
        out.print("replicas: none has reported its presence")
    else:
        replicas = Table(title="LabLink replicas")
        for column in ("replica", "role", "copied", "folded", "record − copied", "copied − folded"):
            replicas.add_column(column)
        replicas.add_column("at")
        replicas.add_column("url")
        for r in found.replicas:
            replicas.add_row(
                r.replica,
                r.role,
                str(r.copied),
                str(r.folded),
                "—" if r.behind_record is None else str(r.behind_record),
                str(r.behind_copy),
                r.at,
                r.url,
            )
        out.print(replicas)
    for problem in found.problems():
        out.print(f"[red]{problem}[/red]")
