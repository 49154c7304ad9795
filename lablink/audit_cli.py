"""`lablink audit …`: the signing key's public half, the published checkpoints, an export of
the log, and its verification (docs/audit.md).

A command-line module beside ``cli``: it reads the log, the key and the bus. Exit codes of
``verify``: 0 sound, 1 something is wrong (one line: the first bad position, what kind, what),
2 it could not be checked (no key, no log, unreachable bus asked for by name).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Annotated

import typer

from lablink.audit.note import Verifier
from lablink.audit.signing_key import load_signer
from lablink.audit.verify import ExportRecord, LogRecord, export_record, verify_record
from lablink.errors import AuditFailed, CheckpointInvalid, NotALog, SigningKeyMissing

app = typer.Typer(help="Audit-grade records: signed checkpoints, export and verification.")

EXIT_UNSOUND = 1
EXIT_UNCHECKED = 2
_DATA_DIR_HELP = "Where scheduler.db lives [env LABLINK_DATA_DIR]."


def _fail(message: str, code: int = EXIT_UNCHECKED) -> typer.Exit:
    typer.echo(f"lablink: {message}", err=True)
    return typer.Exit(code)


def _data_dir(data_dir: Path | None) -> Path:
    from lablink.settings import Settings

    try:
        return Settings.from_env(data_dir=data_dir).data_dir
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


def _own_verifier(data_dir: Path) -> Verifier:
    try:
        return load_signer(data_dir).verifier
    except (SigningKeyMissing, CheckpointInvalid) as exc:
        raise _fail(str(exc)) from None


def _verifier(text: str | None, data_dir: Path) -> Verifier:
    """``--pubkey``: a verifier key, or a file holding one; else the data directory's own."""
    if text is None:
        return _own_verifier(data_dir)
    candidate = Path(text)
    if "+" not in text or candidate.is_file():
        try:
            text = candidate.read_text().strip()
        except OSError as exc:
            raise _fail(f"--pubkey {text}: {exc.strerror or exc}") from None
    try:
        return Verifier.parse(text)
    except CheckpointInvalid as exc:
        raise _fail(f"--pubkey: {exc}") from None


def _log(data_dir: Path) -> sqlite3.Connection:
    from lablink.backup.snapshot import read_only
    from lablink.datadir import DB_NAME

    try:
        return read_only(data_dir / DB_NAME)
    except NotALog as exc:
        raise _fail(str(exc)) from None


def _published(data_dir: Path, origin: str) -> list[str]:
    """The checkpoints ``LABLINK_AUDIT`` holds for ``origin``, read as the bus's read-only
    user (LABLINK_NATS_* if set, else the private server of `lablink serve`)."""
    from nats.errors import NoServersError

    from lablink.audit.publisher import BusCheckpoints
    from lablink.bus.access import resolve, subscriber_options
    from lablink.runtime import nats_options
    from lablink.settings import Settings

    settings = Settings.from_env(data_dir=data_dir)
    url, private = resolve(settings.nats_url, settings.data_dir)
    options = subscriber_options(nats_options(settings, url), private)

    async def read() -> list[str]:
        bus = BusCheckpoints(options, once=True)
        try:
            return await bus.all_published(origin)
        finally:
            await bus.aclose()

    try:
        return asyncio.run(read())
    except (OSError, TimeoutError, NoServersError) as exc:
        raise ConnectionError(
            f"the bus at {options.redacted()} is not reachable (is `lablink serve` running?"
            f" the private bus runs only with it): {type(exc).__name__}"
        ) from exc


def _published_or_warn(data_dir: Path, origin: str) -> list[str]:
    try:
        return _published(data_dir, origin)
    except Exception as exc:  # the bus is optional here: say so and go on without it
        typer.echo(
            f"lablink: warning: no published checkpoints read ({exc}); a dropped tail is not"
            " detectable without them (--checkpoints FILE gives a saved copy)",
            err=True,
        )
        return []


def _read_checkpoints_file(path: Path) -> list[str]:
    """Published checkpoints saved by `lablink audit checkpoints --out FILE` (JSON lines)."""
    notes: list[str] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise _fail(f"--checkpoints {path}: {exc.strerror or exc}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            notes.append(str(json.loads(line)["published_checkpoint"]))
        except (json.JSONDecodeError, KeyError, TypeError):
            raise _fail(
                f"--checkpoints {path}: line {number} is not a published checkpoint"
            ) from None
    return notes


@app.command("pubkey")
def pubkey(data_dir: Annotated[Path | None, typer.Option(help=_DATA_DIR_HELP)] = None) -> None:
    """Print the checkpoint signing key's public half (a verifier key) for auditors."""
    typer.echo(_own_verifier(_data_dir(data_dir)).text())


@app.command("checkpoints")
def checkpoints(
    out: Annotated[
        Path | None, typer.Option(help="Write them to this file (JSON lines) instead.")
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help=_DATA_DIR_HELP)] = None,
) -> None:
    """The signed checkpoints published to the bus (LABLINK_AUDIT), oldest first."""
    directory = _data_dir(data_dir)
    origin = _own_verifier(directory).name
    try:
        notes = _published(directory, origin)
    except Exception as exc:
        raise _fail(f"cannot read LABLINK_AUDIT: {exc}") from None
    if out is None:
        for note in notes:
            typer.echo(note)
        return
    out.write_text("".join(json.dumps({"published_checkpoint": n}) + "\n" for n in notes))
    typer.echo(f"{len(notes)} published checkpoints of {origin} written to {out}", err=True)


@app.command("export")
def export(
    file: Annotated[Path, typer.Argument(help="The export to write (JSON lines).")],
    no_bus: Annotated[
        bool, typer.Option("--no-bus", help="Leave out the published checkpoints.")
    ] = False,
    data_dir: Annotated[Path | None, typer.Option(help=_DATA_DIR_HELP)] = None,
) -> None:
    """Write the log (every event with its hash, the checkpoints among them) and the
    published checkpoints, for verification elsewhere with only the public key."""
    directory = _data_dir(data_dir)
    verifier = _own_verifier(directory)
    published = [] if no_bus else _published_or_warn(directory, verifier.name)
    conn = _log(directory)
    try:
        with file.open("w", encoding="utf-8") as out:
            count = export_record(
                conn,
                out,
                origin=verifier.name,
                verifier_key=verifier.text(),
                published=published,
            )
    finally:
        conn.close()
    typer.echo(
        f"{count} events and {len(published)} published checkpoints of {verifier.name}"
        f" written to {file}",
        err=True,
    )


@app.command("verify")
def verify(
    export_file: Annotated[
        Path | None, typer.Option("--export", help="Verify this export instead of the log.")
    ] = None,
    pubkey_text: Annotated[
        str | None,
        typer.Option(
            "--pubkey", help="The verifier key, or a file holding it (default: the data dir's)."
        ),
    ] = None,
    checkpoints_file: Annotated[
        Path | None,
        typer.Option(
            "--checkpoints",
            help="Published checkpoints saved by `lablink audit checkpoints --out FILE`.",
        ),
    ] = None,
    no_bus: Annotated[
        bool, typer.Option("--no-bus", help="Do not read the published checkpoints from the bus.")
    ] = False,
    replica_keys: Annotated[
        list[str] | None,
        typer.Option(
            "--replica-key",
            help="Cluster mode: another replica's verifier key (or a file holding it), to check"
            " its checkpoints in this copy too; repeatable.",
        ),
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help=_DATA_DIR_HELP)] = None,
) -> None:
    """Recompute the hash chain, check every checkpoint's signature, and that the log
    extends the published checkpoints. Prints the first bad position and what is wrong."""
    directory = _data_dir(data_dir)
    verifier = _verifier(pubkey_text, directory)
    replicas = [_verifier(text, directory) for text in replica_keys or ()]
    published = _read_checkpoints_file(checkpoints_file) if checkpoints_file else []
    try:
        if export_file is not None:
            record = ExportRecord(export_file)
            published += record.published
            result = verify_record(record, verifier, published, replicas=replicas)
        else:
            if not no_bus and checkpoints_file is None:
                published += _published_or_warn(directory, verifier.name)
            conn = _log(directory)
            try:
                result = verify_record(LogRecord(conn), verifier, published, replicas=replicas)
            finally:
                conn.close()
    except AuditFailed as exc:
        raise _fail(str(exc), EXIT_UNSOUND) from None
    except OSError as exc:
        raise _fail(str(exc)) from None
    typer.echo(result.summary())
