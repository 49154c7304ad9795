"""`lablink equipment …`: instruments' calibration through a running server's HTTP API
(docs/calibration.md), with the user's API key, as `lablink results` reads.

Every command prints what the server answered (the instrument's calibration status after
the change) and exits 1 with the server's ``detail`` when it refuses (a 4xx naming the field,
the value and why) or cannot be reached.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from lablink.errors import ServerRefused
from lablink.remote import Remote
from lablink.settings import Settings

app = typer.Typer(help="Instruments' calibration: certificates, overrides, quarantine.")

Url = Annotated[
    str | None,
    typer.Option(
        envvar="LABLINK_URL",
        show_envvar=False,
        help="The server [env LABLINK_URL] (default: http://LABLINK_HOST:LABLINK_PORT).",
    ),
]
Key = Annotated[
    str | None,
    typer.Option(
        envvar="LABLINK_API_KEY",
        show_envvar=False,
        help="An API key [env LABLINK_API_KEY]: operator to record, admin for the rest.",
    ),
]
Equipment = Annotated[str, typer.Argument(help="The instrument's id, e.g. power_supply_1.")]
Certificate = Annotated[str, typer.Argument(help="The certificate's id.")]
Reason = Annotated[str | None, typer.Option(help="Why (kept in the log with the change).")]


def _remote(url: str | None, key: str | None) -> Remote:
    return Remote(url or Settings.from_env().server_url, key)


def _path(equipment_id: str, *parts: str) -> str:
    quoted = [urllib.parse.quote(p, safe="") for p in (equipment_id, *parts)]
    return "/api/equipment/" + "/".join(quoted)


def _ask(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except ServerRefused as exc:
        typer.echo(f"lablink: {exc}", err=True)
        raise typer.Exit(1) from None


def _status(answer: dict[str, Any]) -> None:
    found = answer["calibration"]
    if answer.get("message"):
        typer.echo(answer["message"])
    blocked = "runs blocked" if found["blocked"] else "runs go ahead"
    typer.echo(f"{answer['equipment_id']}: {found['status']} ({blocked}): {found['reason']}")


@app.command("calibrate")
def calibrate(
    equipment_id: Equipment,
    certificate: Annotated[str, typer.Option(help="The certificate's id.")],
    performed: Annotated[str, typer.Option(help="When it was calibrated: YYYY-MM-DD.")],
    due: Annotated[str, typer.Option(help="When it falls due: YYYY-MM-DD.")],
    by: Annotated[str, typer.Option(help="Who calibrated it (a person or a laboratory).")],
    url: Url = None,
    key: Key = None,
) -> None:
    """Record a calibration certificate for an instrument."""
    body = {"certificate": certificate, "performed": performed, "due": due, "by": by}
    remote = _remote(url, key)
    _status(_ask(lambda: remote.send_json("POST", _path(equipment_id, "calibrations"), body)))


@app.command("calibrations")
def calibrations(equipment_id: Equipment, url: Url = None, key: Key = None) -> None:
    """An instrument's calibration status and every certificate recorded for it."""
    remote = _remote(url, key)
    answer = _ask(lambda: remote.get_json(_path(equipment_id, "calibrations")))
    _status(answer)
    table = Table(title=f"calibrations of {equipment_id}: {answer['count']}")
    for column in ("certificate", "performed", "due", "state"):
        table.add_column(column, no_wrap=True)
    for column in ("by", "recorded", "why changed"):
        table.add_column(column)
    for item in answer["calibrations"]:
        state = "in force" if item["in_force"] else item["state"]
        changed = item["withdraw_reason"] or item["correction_reason"] or ""
        table.add_row(
            item["certificate"],
            item["performed"],
            item["due"],
            state,
            item["by"],
            f"{item['recorded_at']} by {item['recorded_by']}",
            changed,
        )
    Console().print(table)


@app.command("correct")
def correct(
    equipment_id: Equipment,
    certificate: Certificate,
    performed: Annotated[str | None, typer.Option(help="The corrected date: YYYY-MM-DD.")] = None,
    due: Annotated[str | None, typer.Option(help="The corrected due date: YYYY-MM-DD.")] = None,
    by: Annotated[str | None, typer.Option(help="The corrected performer.")] = None,
    reason: Reason = None,
    url: Url = None,
    key: Key = None,
) -> None:
    """Correct a certificate's dates or performer (the log keeps the old values)."""
    body = {
        k: v
        for k, v in {"performed": performed, "due": due, "by": by, "reason": reason}.items()
        if v is not None
    }
    remote = _remote(url, key)
    path = _path(equipment_id, "calibrations", certificate)
    _status(_ask(lambda: remote.send_json("PUT", path, body)))


@app.command("withdraw")
def withdraw(
    equipment_id: Equipment,
    certificate: Certificate,
    reason: Reason = None,
    url: Url = None,
    key: Key = None,
) -> None:
    """Withdraw a certificate: it no longer counts."""
    body = {"reason": reason} if reason is not None else {}
    remote = _remote(url, key)
    path = _path(equipment_id, "calibrations", certificate, "withdraw")
    _status(_ask(lambda: remote.send_json("POST", path, body)))


@app.command("override")
def override(
    equipment_id: Equipment,
    reason: Annotated[str, typer.Option(help="Why runs may go ahead (required).")],
    expires: Annotated[
        str, typer.Option(help="Until when: ISO 8601 (no offset: the server's time zone).")
    ],
    url: Url = None,
    key: Key = None,
) -> None:
    """Let runs go ahead despite an expired or missing calibration, until --expires."""
    body = {"reason": reason, "expires_at": expires}
    remote = _remote(url, key)
    path = _path(equipment_id, "calibration-override")
    _status(_ask(lambda: remote.send_json("POST", path, body)))


@app.command("quarantine")
def quarantine(
    equipment_id: Equipment,
    reason: Annotated[str, typer.Option(help="Why it is taken out of service (required).")],
    url: Url = None,
    key: Key = None,
) -> None:
    """Take an instrument out of service: no run is dispatched to it until released."""
    remote = _remote(url, key)
    path = _path(equipment_id, "quarantine")
    _status(_ask(lambda: remote.send_json("POST", path, {"reason": reason})))


@app.command("release")
def release(
    equipment_id: Equipment,
    reason: Annotated[str, typer.Option(help="Why it is back in service (required).")],
    url: Url = None,
    key: Key = None,
) -> None:
    """Put a quarantined instrument back in service."""
    remote = _remote(url, key)
    path = _path(equipment_id, "release")
    _status(_ask(lambda: remote.send_json("POST", path, {"reason": reason})))
