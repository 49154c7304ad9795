"""The ``lablink`` command."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import sys
import time
import urllib.parse
from collections.abc import Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

from lablink import __version__
from lablink.bus.options import NatsOptions
from lablink.datadir import DataDirLock
from lablink.eventstore.sqlite import SQLiteEventStore, connect
from lablink.logconfig import configure_logging
from lablink.projections.runner import Projector
from lablink.runtime import Runtime, run_relay, run_until_signalled
from lablink.runtime import serve as serve_api
from lablink.settings import Settings

app = typer.Typer(
    help="LabLink: an event-sourced scheduler for laboratory instruments.",
    # Markdown, not Rich markup: Rich would swallow "[env LABLINK_HOST]" as a style tag.
    rich_markup_mode="markdown",
)
console = Console(stderr=True)

# Exit code of a start refused for its data directory: unusable (missing and uncreatable,
# read-only, not a directory), already used by another LabLink, or a database that cannot
# be opened for writing. The same as a usage error: the command cannot run as asked.
EXIT_DATA_DIR = 2


@contextlib.contextmanager
def data_dir_errors(when_locked: str = "") -> Iterator[None]:
    """One line on stderr naming the path and the cause, exit code 2, no traceback."""
    from lablink.equipment_agent.config import ConfigError
    from lablink.errors import DataDirError, DataDirLocked, NotifyConfigError, StorageError

    try:
        yield
    except (DataDirError, StorageError, NotifyConfigError, ConfigError) as exc:
        hint = f": {when_locked}" if when_locked and isinstance(exc, DataDirLocked) else ""
        typer.echo(f"lablink: {exc}{hint}", err=True)
        raise typer.Exit(EXIT_DATA_DIR) from None


def _parse_until(value: str) -> datetime:
    try:
        instant = datetime.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r} is not an ISO 8601 time: {exc}") from exc
    # A time without an offset is read as UTC: the log stores UTC.
    return instant if instant.tzinfo else instant.replace(tzinfo=UTC)


@app.command()
def version() -> None:
    """Print LabLink's version."""
    typer.echo(__version__)


@app.command()
def replay(
    db: Annotated[
        Path | None,
        typer.Option(
            help="The database holding the event log [default: scheduler.db under "
            "LABLINK_DATA_DIR, else data/]."
        ),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(
            help="Rebuild the views as they stood at this ISO 8601 time (UTC if no offset)."
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(help="Write the rebuilt views to this file (default for --until)."),
    ] = None,
) -> None:
    """Drop every projection and rebuild it from the event log, from position 0.

    Without --until the views (views.db beside DB) are rebuilt in place (stop `lablink serve`
    first); the log is only read.
    With --until the log is left untouched and the views as they stood at that moment are
    written to --output (default: `data/replay-<time>.db` beside DB), for auditing.
    """
    if db is None:
        db = Settings.from_env().db_path
    if not db.exists():
        raise typer.BadParameter(f"no database at {db}", param_hint="--db")
    until_at = _parse_until(until) if until else None
    # Rebuilding in place drops the views a running scheduler reads and writes: only with the
    # data directory to itself. Replaying into another file (--output, --until) only reads
    # the log, which is safe beside a running server.
    held = _replay_lock(db.parent) if until_at is None and output is None else None
    source = SQLiteEventStore(db)
    if until_at is not None and output is None:
        output = db.parent / f"replay-{until_at.strftime('%Y%m%dT%H%M%SZ')}.db"
    if output is not None and output.resolve() == db.resolve():
        raise typer.BadParameter("must differ from --db", param_hint="--output")
    # In place: the views' own file beside the log (views.db), never the log's.
    target = connect(output if output is not None else _views_of(db))
    projector = Projector()
    total = source.last_position()
    started = time.perf_counter()
    with Progress(
        TextColumn("replaying"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.completed:,} events"),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("replay", total=total)
        with source.lock:
            folded = projector.rebuild(
                source,
                target,
                until=until_at,
                progress=lambda n: progress.advance(task, n),
            )
    elapsed = time.perf_counter() - started
    rate = folded / elapsed if elapsed > 0 else float("inf")
    where = output if output is not None else _views_of(db)
    typer.echo(f"replayed {folded:,} events in {elapsed:.2f} s ({rate:,.0f} events/s) into {where}")
    target.close()
    source.close()
    if held is not None:
        held.release()


def _replay_lock(directory: Path) -> DataDirLock:
    with data_dir_errors(
        when_locked="stop it before replaying in place, or replay into --output FILE"
    ):
        return DataDirLock(directory).acquire()


# Exit code of a backup, restore or verify that found something wrong (a discrepancy, a
# damaged copy, a refused target).
EXIT_BACKUP = 1
_DATA_DIR_HELP = "Where scheduler.db lives [env LABLINK_DATA_DIR]."


@contextlib.contextmanager
def _backup_errors() -> Iterator[None]:
    """One line on stderr naming the file or directory and what is wrong; no traceback."""
    from lablink.errors import BackupError

    with data_dir_errors():
        try:
            yield
        except BackupError as exc:
            typer.echo(f"lablink: {exc}", err=True)
            raise typer.Exit(EXIT_BACKUP) from None


def _data_dir(data_dir: Path | None) -> Path:
    try:
        return Settings.from_env(data_dir=data_dir).data_dir
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


@app.command()
def backup(
    file: Annotated[Path, typer.Argument(help="The copy to write (FILE.sha256 beside it).")],
    data_dir: Annotated[Path | None, typer.Option(help=_DATA_DIR_HELP)] = None,
    force: Annotated[bool, typer.Option(help="Replace FILE if it exists.")] = False,
) -> None:
    """Copy the event log, consistently, while LabLink runs; print the last position it holds.

    Reads only (no lock: beside `lablink serve`). The views are not copied: `lablink restore`
    folds them again (docs/operations.md, "Backup and restore").
    """
    from lablink.backup.snapshot import take

    db = _data_dir(data_dir) / "scheduler.db"
    with (
        _backup_errors(),
        _progress("backing up", "{task.completed:,} pages") as bar,
    ):
        task = bar.add_task("backup", total=None)
        made = take(
            db,
            file,
            force=force,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    typer.echo(
        f"backed up {db} to {made.file}: position {made.position}, {made.size:,} bytes,"
        f" sha256 {made.sha256} ({made.seconds:.1f} s)"
    )


@app.command()
def restore(
    file: Annotated[Path, typer.Argument(help="A copy made by `lablink backup`.")],
    data_dir: Annotated[
        Path, typer.Option(help="The data directory to restore into: empty or missing.")
    ],
) -> None:
    """Restore a backup into an empty (or new) data directory and fold its views.

    FILE.sha256, when present, must match. A directory that holds anything is refused.
    """
    from lablink.backup.restore import restore as restore_backup

    with _backup_errors(), _progress("folding the views", "{task.completed:,} events") as bar:
        task = bar.add_task("restore", total=None)
        done = restore_backup(file, data_dir, progress=lambda n: bar.advance(task, n))
    checked = f"sha256 {done.sha256} checked" if done.sha256 else f"no {file}.sha256 to check"
    typer.echo(
        f"restored {file} into {done.db}: position {done.position}, {checked},"
        f" views folded into {done.views} ({done.seconds:.1f} s)"
    )


@app.command()
def verify(
    data_dir: Annotated[Path | None, typer.Option(help=_DATA_DIR_HELP)] = None,
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for the views to fold the log's end.")
    ] = 30.0,
) -> None:
    """Check the log and the views; exit 1 with the first discrepancy, in one line.

    integrity_check on both files, positions gap-free, versions per stream contiguous, and a
    replay of the log equal to the live views, table by table, row by row. Reads only: it
    runs beside `lablink serve`.
    """
    from lablink.backup.verify import verify as verify_data_dir

    directory = _data_dir(data_dir)
    with _backup_errors(), console.status("verifying") as status:
        report = verify_data_dir(directory, wait=wait, step=status.update)
    typer.echo(report.summary())


def _progress(label: str, count: str) -> Progress:
    return Progress(
        TextColumn(label),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn(count),
        TimeRemainingColumn(),
        console=console,
    )


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind [env LABLINK_HOST].")] = None,
    port: Annotated[int | None, typer.Option(help="Port [env LABLINK_PORT].")] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Where scheduler.db lives [env LABLINK_DATA_DIR].")
    ] = None,
) -> None:
    """Run LabLink: the scheduler and the HTTP API (docs at /schema) until SIGTERM/SIGINT."""
    configure_logging()
    try:
        settings = Settings.from_env(host=host, port=port, data_dir=data_dir)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    from lablink.errors import UnsafeBind

    try:
        with data_dir_errors():
            run_event_loop(serve_api(settings))
    except UnsafeBind as exc:
        # A refusal to start, like a data directory that cannot be used: one line, exit 2.
        typer.echo(f"lablink: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def scheduler(
    data_dir: Annotated[
        Path | None, typer.Option(help="Where scheduler.db lives [env LABLINK_DATA_DIR].")
    ] = None,
    executor: Annotated[
        str | None,
        typer.Option(help="sim (simulated bench, in-process) or noop [env LABLINK_EXECUTOR]."),
    ] = None,
    realtime: Annotated[
        bool, typer.Option(help="Instrument operations take real time [env LABLINK_REALTIME].")
    ] = False,
) -> None:
    """Run the scheduling engine alone (no HTTP API) until SIGTERM or SIGINT."""
    configure_logging()
    try:
        settings = Settings.from_env(
            data_dir=data_dir, executor=executor, realtime=realtime or None
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    with data_dir_errors():
        asyncio.run(run_until_signalled(Runtime(settings)))


@app.command()
def relay(
    data_dir: Annotated[
        Path | None, typer.Option(help="Where scheduler.db lives [env LABLINK_DATA_DIR].")
    ] = None,
) -> None:
    """Publish the event log to NATS JetStream on its own (LABLINK_NATS_URL, or a private
    nats-server under data/nats) until SIGTERM or SIGINT."""
    configure_logging()
    settings = Settings.from_env(data_dir=data_dir)
    with data_dir_errors():
        asyncio.run(run_relay(settings))


@app.command()
def agent(
    config: Annotated[
        Path | None,
        typer.Option("--config", help="The lab.toml listing this agent's instruments."),
    ] = None,
    simulated: Annotated[
        bool,
        typer.Option(
            "--simulated",
            help="Serve the built-in simulated bench (the guide's six instruments on "
            "pyvisa-sim), as `lablink serve` does by default, instead of a lab.toml.",
        ),
    ] = False,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="Where a private nats-server's URL file is found [env LABLINK_DATA_DIR]."
        ),
    ] = None,
    # `lablink serve`'s side of its own agent process (lablink/equipment_agent/child.py):
    # written once the agent has started. Not an operator's option.
    ready_fd: Annotated[int | None, typer.Option("--ready-fd", hidden=True)] = None,
) -> None:
    """Run an equipment agent for the instruments of a lab.toml (--config), or for the
    simulated bench (--simulated), until SIGTERM or SIGINT.

    NATS: [nats] url in the file, else LABLINK_NATS_URL, else the private server of the
    `lablink serve` that uses --data-dir. Credentials: [nats] in the file, else
    LABLINK_NATS_USER/_PASSWORD/_CREDENTIALS, else (the private server) the agent's own user,
    made in data/nats/credentials.json the first time. The simulated bench keeps its
    captures and ledger under --data-dir and takes real time with LABLINK_REALTIME=1."""
    from lablink.equipment_agent.config import ConfigError, load_config, simulated_config
    from lablink.errors import BusCredentialsError
    from lablink.runtime import run_agent

    configure_logging()
    if (config is None) == (not simulated):
        given = "both were given" if simulated else "neither was given"
        raise typer.BadParameter(
            f"{given}: pass --config lab.toml (this PC's instruments) or --simulated (the"
            " built-in simulated bench), one of them",
            param_hint="'--config' / '--simulated'",
        )
    settings = Settings.from_env(data_dir=data_dir)
    if config is not None:
        try:
            lab = load_config(config)
        except ConfigError as exc:
            raise typer.BadParameter(str(exc), param_hint="--config") from exc
    else:
        lab = simulated_config(settings.data_dir, realtime=settings.realtime)
    url, private = (lab.nats.url, None) if lab.nats.url else _nats_target(data_dir)
    try:
        run_event_loop(run_agent(lab, url, settings, private, ready_fd=ready_fd))
    except BusCredentialsError as exc:
        typer.echo(f"lablink: {exc}", err=True)
        raise typer.Exit(2) from None


ReasonOption = Annotated[
    str | None,
    typer.Option(
        help="Why: recorded with the change in the audit trail; required with"
        " LABLINK_REQUIRE_REASON=1."
    ),
]


def _reason(reason: str | None) -> str | None:
    """``--reason`` as the commands record it; a malformed one stops the command before it
    writes anything (exit code 2), whatever it would have changed."""
    from lablink.domain.reasons import checked_reason
    from lablink.errors import InvalidRequest

    try:
        return checked_reason(reason, required=False)
    except InvalidRequest as exc:
        raise typer.BadParameter(str(exc), param_hint="--reason") from None


profiles_app = typer.Typer(help="Equipment profiles: settings a job applies before it runs.")
app.add_typer(profiles_app, name="profiles")


@profiles_app.command("import")
def profiles_import(
    directory: Annotated[Path, typer.Argument(help="A folder of profile `*.json` files.")],
    reason: ReasonOption = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Where scheduler.db lives [env LABLINK_DATA_DIR].")
    ] = None,
) -> None:
    """Load a folder of profile files: new ones created, changed ones updated (recording
    `--reason`), bad ones refused with their reasons (exit code 1 if any was refused)."""
    from lablink.profile_import import run_import

    settings = Settings.from_env(data_dir=data_dir)
    code = run_import(
        directory,
        settings.db_path,
        echo=typer.echo,
        reason=_reason(reason),
        require_reason=settings.require_reason,
    )
    if code:
        raise typer.Exit(code)


events_app = typer.Typer(help="Follow the event log as NATS carries it.")
app.add_typer(events_app, name="events")
alarms_app = typer.Typer(help="Alarms as they are raised.")
app.add_typer(alarms_app, name="alarms")

from lablink.nats_cli import app as nats_app  # noqa: E402  (a sub-app of its own module)

app.add_typer(nats_app, name="nats")

from lablink.audit_cli import app as audit_app  # noqa: E402  (a sub-app of its own module)

app.add_typer(audit_app, name="audit")

from lablink.equipment_cli import app as equipment_app  # noqa: E402  (a sub-app of its own)

app.add_typer(equipment_app, name="equipment")

from lablink.cluster.commands import app as cluster_app  # noqa: E402  (a sub-app of its own)

app.add_typer(cluster_app, name="cluster")


def _nats_target(data_dir: Path | None) -> tuple[str, Path | None]:
    """The NATS URL, and the private server's folder when it is that server's."""
    from lablink.bus.access import resolve

    settings = Settings.from_env(data_dir=data_dir)
    try:
        return resolve(settings.nats_url, settings.data_dir)
    except FileNotFoundError as exc:
        raise typer.BadParameter(str(exc)) from exc


def _subscriber(data_dir: Path | None) -> NatsOptions:
    """How the read-only commands connect: LABLINK_NATS_* if set, else the private server's
    read-only ``subscriber`` user (data/nats/credentials.json)."""
    from lablink.bus.access import subscriber_options
    from lablink.errors import BusCredentialsError
    from lablink.runtime import nats_options

    url, private = _nats_target(data_dir)
    try:
        return subscriber_options(nats_options(Settings.from_env(data_dir=data_dir), url), private)
    except BusCredentialsError as exc:
        raise typer.BadParameter(str(exc)) from exc


@events_app.command("tail")
def events_tail(
    event_type: Annotated[
        str | None, typer.Option("--type", help="e.g. execution.failed, or execution")
    ] = None,
    job: Annotated[str | None, typer.Option("--job", help="Only this job's events.")] = None,
    equipment: Annotated[
        str | None, typer.Option("--equipment", help="Only this instrument's events.")
    ] = None,
    from_start: Annotated[
        bool, typer.Option("--from-start", help="Replay the stream from its start first.")
    ] = False,
    start_position: Annotated[
        int | None, typer.Option("--from-position", help="Replay from this stream sequence.")
    ] = None,
    count: Annotated[int | None, typer.Option(help="Stop after this many events.")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="[env LABLINK_DATA_DIR]")] = None,
) -> None:
    """Print events live, filtered by type, job or equipment."""
    from lablink.bus.watch import tail_events

    url = _subscriber(data_dir)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(
                tail_events(
                    url,
                    event_type=event_type,
                    job_id=job,
                    equipment_id=equipment,
                    from_start=from_start,
                    start_position=start_position,
                    count=count,
                )
            )
    except ConnectionError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc


@alarms_app.command("watch")
def alarms_watch(
    count: Annotated[int | None, typer.Option(help="Stop after this many alarms.")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="[env LABLINK_DATA_DIR]")] = None,
) -> None:
    """Print alarms as they are raised (subject `lablink.alarms.<severity>.<equipment_id>`)."""
    from lablink.bus.watch import watch_alarms

    url = _subscriber(data_dir)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(watch_alarms(url, count=count))
    except ConnectionError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc


keys_app = typer.Typer(help="API keys: viewer (reads), operator (jobs, runs), admin (all).")
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option(help="viewer, operator or admin.")],
    name: Annotated[str, typer.Option(help="Who holds the key; recorded as the actor.")],
    data_dir: Annotated[
        Path | None, typer.Option(help="Where scheduler.db lives [env LABLINK_DATA_DIR].")
    ] = None,
) -> None:
    """Create an API key and print it once (only its hash is stored)."""
    from lablink.clock import SystemClock
    from lablink.errors import InvalidRequest
    from lablink.keys import create_key
    from lablink.logstore import open_store

    settings = Settings.from_env(data_dir=data_dir)
    with data_dir_errors():
        store = open_store(settings.db_path)
    try:
        key_id, key = create_key(
            store, name=name, role=role, actor="lablink keys create", now=SystemClock().now()
        )
    except InvalidRequest as exc:
        raise typer.BadParameter(str(exc)) from exc
    finally:
        store.close()
    typer.echo(key)
    console.print(f"key {key_id} for {name!r} with role {role!r}: shown once, store it now")


def _views_of(db: Path) -> Path:
    from lablink.projections.reading import views_file

    views = views_file(db)
    assert views is not None  # a file: checked to exist above
    return views


def _existing_db(data_dir: Path | None) -> Path:
    """The database the keys commands read; listing or revoking never creates one."""
    settings = Settings.from_env(data_dir=data_dir)
    if not settings.db_path.exists():
        typer.echo(f"lablink: no database at {settings.db_path} (wrong --data-dir?)", err=True)
        raise typer.Exit(2)
    return settings.db_path


@keys_app.command("list")
def keys_list(
    data_dir: Annotated[
        Path | None, typer.Option(help="Where scheduler.db lives [env LABLINK_DATA_DIR].")
    ] = None,
) -> None:
    """Every API key: id, name, role, first characters, created, last used, revoked."""
    from rich.table import Table

    from lablink.keys import key_listing
    from lablink.logstore import open_store
    from lablink.projections.keys import last_used
    from lablink.projections.reading import reading_views

    db = _existing_db(data_dir)
    with data_dir_errors():
        store = open_store(db)
    try:
        with reading_views(store) as views:
            rows = key_listing(views, last_used(views))
    finally:
        store.close()
    table = Table(title=f"API keys in {db}")
    for column in ("id", "name", "role", "prefix", "created", "last used", "revoked"):
        table.add_column(column, no_wrap=column in ("id", "prefix"))
    for row in rows:
        revoked = (
            f"[red]{row['revoked_at']} by {row['revoked_by']}[/red]" if row["revoked"] else "no"
        )
        table.add_row(
            row["key_id"],
            row["name"],
            row["role"],
            row["prefix"] or "—",
            f"{row['created_at']} by {row['created_by']}",
            row["last_used_at"] or "—",
            revoked,
        )
    Console(width=200).print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (see `lablink keys list`).")],
    by: Annotated[
        str | None, typer.Option(help="Who revokes it, recorded as the actor [your login].")
    ] = None,
    reason: ReasonOption = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Where scheduler.db lives [env LABLINK_DATA_DIR].")
    ] = None,
) -> None:
    """Revoke an API key: it fails from the next request on (an apikey.revoked event, with
    `--reason`)."""
    import getpass

    from lablink.clock import SystemClock
    from lablink.errors import InvalidRequest, KeyAlreadyRevoked, KeyNotFound
    from lablink.keys import revoke_key
    from lablink.logstore import open_store

    given = _reason(reason)
    require = Settings.from_env(data_dir=data_dir).require_reason
    db = _existing_db(data_dir)
    if by is None:
        try:
            by = getpass.getuser()
        except (OSError, KeyError):
            by = "lablink keys revoke"
    with data_dir_errors():
        store = open_store(db)
    try:
        revoke_key(
            store, key_id, actor=by, now=SystemClock().now(), reason=given, require_reason=require
        )
    except (KeyNotFound, KeyAlreadyRevoked, InvalidRequest) as exc:
        typer.echo(f"lablink: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        store.close()
    typer.echo(f"key {key_id} revoked by {by}")


# The options of the commands that read from a running server (results, data get).
ServerUrl = Annotated[
    str | None,
    typer.Option(
        envvar="LABLINK_URL",
        show_envvar=False,
        help="The server [env LABLINK_URL] (default: http://LABLINK_HOST:LABLINK_PORT).",
    ),
]
ApiKey = Annotated[
    str | None,
    typer.Option(
        envvar="LABLINK_API_KEY",
        show_envvar=False,
        help="A viewer (or higher) API key [env LABLINK_API_KEY].",
    ),
]


def _instant_or_ago(value: str | None, option: str) -> datetime | None:
    """An ISO 8601 time (no offset: UTC), or a span back from now: 7d, 24h, 30m."""
    if value is None:
        return None
    text = value.strip()
    spans = {"d": 86400, "h": 3600, "m": 60}
    if text[:-1].isdigit() and text[-1:] in spans:
        return datetime.now(UTC) - timedelta(seconds=int(text[:-1]) * spans[text[-1]])
    try:
        instant = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is neither an ISO 8601 time (2026-11-26T00:00:00Z) nor a span back"
            " from now (7d, 24h, 30m)",
            param_hint=option,
        ) from None
    return instant if instant.tzinfo else instant.replace(tzinfo=UTC)


@app.command()
def results(
    job_id: Annotated[str, typer.Argument(help="The job whose series to read.")],
    since: Annotated[
        str | None,
        typer.Option(help="From this scheduled time (ISO 8601; no offset = UTC), or 7d, 24h."),
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Before this scheduled time (same forms as --since).")
    ] = None,
    as_csv: Annotated[
        bool, typer.Option("--csv", help="CSV (header row, one row per result) to stdout.")
    ] = False,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the CSV to this file.")
    ] = None,
    url: ServerUrl = None,
    key: ApiKey = None,
) -> None:
    """A job's results, oldest first: a table, or CSV for a spreadsheet (--csv, -o FILE)."""
    from lablink.errors import ServerRefused
    from lablink.remote import Remote

    remote = Remote(url or Settings.from_env().server_url, key)
    path = f"/api/scheduler/jobs/{urllib.parse.quote(job_id, safe='')}/results"
    bounds: dict[str, Any] = {
        "since": _iso(_instant_or_ago(since, "--since")),
        "until": _iso(_instant_or_ago(until, "--until")),
    }
    try:
        if as_csv or output is not None:
            _write_stream(remote.stream(path, format="csv", **bounds), output)
            return
        points: list[dict[str, Any]] = []
        cursor = None
        while True:
            page = remote.get_json(path, limit=1000, cursor=cursor, **bounds)
            points += page["results"]
            cursor = page["next_cursor"]
            if cursor is None:
                break
    except ServerRefused as exc:
        typer.echo(f"lablink: {exc}", err=True)
        raise typer.Exit(1) from None
    from lablink.results_table import results_table

    Console().print(results_table(job_id, points))


data_app = typer.Typer(help="Captured data (acquisitions): download it from the server.")
app.add_typer(data_app, name="data")
# Downloads from this size on show a progress bar.
PROGRESS_FROM_BYTES = 1024 * 1024


@data_app.command("get")
def data_get(
    execution_id: Annotated[str, typer.Argument(help="The execution whose capture to get.")],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Write to this file (default: the name the server gives, in this folder).",
        ),
    ] = None,
    url: ServerUrl = None,
    key: ApiKey = None,
) -> None:
    """Download an execution's capture (CSV) over HTTP and check its SHA-256.

    Written to FILE.partial and renamed once complete and verified: a download cut short or
    whose SHA-256 differs from the one recorded leaves no file and exits 1.
    """
    from lablink.errors import ServerRefused
    from lablink.remote import Remote

    remote = Remote(url or Settings.from_env().server_url, key)
    path = f"/api/scheduler/executions/{urllib.parse.quote(execution_id, safe='')}/data"
    try:
        answer = remote.download(path)
    except ServerRefused as exc:
        typer.echo(f"lablink: {exc}", err=True)
        raise typer.Exit(1) from None
    with answer:
        expected = answer.headers.get("ETag", "").strip().strip('"').lower()
        size = int(answer.headers.get("Content-Length") or 0)
        target = output or Path(_attachment_name(answer.headers, execution_id))
        partial = target.with_name(target.name + ".partial")
        digest = hashlib.sha256()
        received = 0
        try:
            with (
                partial.open("wb") as file,
                Progress(
                    TextColumn("{task.description}"),
                    BarColumn(),
                    TaskProgressColumn(),
                    TimeRemainingColumn(),
                    console=console,
                    disable=size < PROGRESS_FROM_BYTES,
                ) as progress,
            ):
                task = progress.add_task(f"{target.name}", total=size or None)
                while chunk := answer.read(_CHUNK):
                    file.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    progress.update(task, advance=len(chunk))
            problem = None
            if size and received != size:
                problem = f"the download stopped at {received} of {size} bytes"
            elif expected and digest.hexdigest() != expected:
                problem = (
                    f"SHA-256 mismatch: received {digest.hexdigest()}, the execution"
                    f" recorded {expected}"
                )
            if problem is not None:
                raise _DownloadFailed(problem)
            partial.replace(target)
        except (OSError, _DownloadFailed) as exc:
            partial.unlink(missing_ok=True)
            typer.echo(f"lablink: {execution_id}: {exc}; nothing written", err=True)
            raise typer.Exit(1) from None
    console.print(f"wrote {target} ({received} bytes, sha256 {digest.hexdigest()})")


_CHUNK = 256 * 1024
_FILENAME = re.compile(r'filename="([^"]+)"')


class _DownloadFailed(Exception):
    """The bytes received are not the capture the execution recorded."""


def _attachment_name(headers: Any, execution_id: str) -> str:
    """The file name of a Content-Disposition (its last path part only), else the id."""
    match = _FILENAME.search(headers.get("Content-Disposition", ""))
    name = Path(match.group(1)).name if match else ""
    return name if name not in ("", ".", "..") else f"{execution_id}.csv"


def _iso(instant: datetime | None) -> str | None:
    return instant.isoformat() if instant is not None else None


def _write_stream(chunks: Iterator[bytes], output: Path | None) -> None:
    """To the file (written whole, then renamed: never half a file), else to stdout."""
    if output is None:
        out = sys.stdout.buffer
        for chunk in chunks:
            out.write(chunk)
        out.flush()
        return
    partial = output.with_name(output.name + ".partial")
    try:
        with partial.open("wb") as file:
            for chunk in chunks:
                file.write(chunk)
        partial.replace(output)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    console.print(f"wrote {output}")


def run_event_loop(main: Coroutine[Any, Any, None]) -> None:
    """uvloop when installed (it serves HTTP about twice as fast), else asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def main() -> None:
    app()


# `python -m lablink.cli`: how `lablink serve` starts its agent process, whatever the
# environment's scripts are called (lablink/equipment_agent/child.py).
if __name__ == "__main__":
    main()
