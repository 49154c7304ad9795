"""How an event is a message of the JetStream record (``lablink.eventstore.jetstream``).

Subject ``lablink.log.<stream token>.<type>``: one subject per aggregate stream and event
type, so ``lablink.log.<stream token>.>`` names everything of one stream (the optimistic
check's subject) and the type is never missing (``x.>`` does not match ``x``). The stream id
is one token, escaped so that the mapping is injective and ordinary ids stay readable
(``job_ab12`` is ``job_ab12``): letters, digits, ``_`` and ``-`` stand for themselves, every
other UTF-8 byte, ``~`` included, is ``~`` and two hex digits (``a.b`` is ``a~2eb``).
``lablink.bus.subjects.token`` is lossy on purpose (for filters); this one must not be.

The body is the event's payload exactly as the SQLite log stores it (``encode_event``);
the envelope travels in headers: ``Nats-Msg-Id`` (the event id: JetStream drops a repeated
publish of it within its duplicate window), the time (``format_instant`` text), the actor and
the correlation id (absent for none). The version is not sent: it is the position of the
event in its stream, which every copy numbers the same way from the record's order.

Pure: no I/O.
"""

from __future__ import annotations

import re
import string

from lablink.events import NewEvent, encode_event, event_type
from lablink.eventstore.base import StoredRow, format_instant, new_event_id
from lablink.eventstore.sqlite import CopiedRow

PREFIX = "lablink.log"
SUBJECTS = f"{PREFIX}.>"
MSG_ID = "Nats-Msg-Id"
OCCURRED_AT = "Lablink-Occurred-At"
ACTOR = "Lablink-Actor"
CORRELATION_ID = "Lablink-Correlation-Id"

# The scheduler's lease (``lablink.eventstore.lease``): a subject of the record's stream, as a
# fence's expectation must name one, and one no stream id maps to (an escape is ``~`` and two
# hex digits, never ``~l``). Its messages are not events: the copy skips them.
LEASE_SUBJECT = f"{PREFIX}.~lease.scheduler"

_PLAIN = frozenset(string.ascii_letters + string.digits + "_-")
_ESCAPE = "~"
_ESCAPED = re.compile(r"~([0-9a-f]{2})")
# A header value must not break the header block; the envelope's text never needs these.
_HEADER_BREAKS = re.compile(r"[\r\n]")


class MalformedMessage(ValueError):
    """A message of the record that is not an event of LabLink's (``subject`` names it)."""

    def __init__(self, subject: str, reason: str) -> None:
        self.subject = subject
        super().__init__(f"message on {subject!r} is not a LabLink event: {reason}")


def stream_token(stream_id: str) -> str:
    """``stream_id`` as one subject token; ``stream_id_of`` gives it back."""
    if not stream_id:
        raise ValueError("an empty stream id has no subject")
    if all(c in _PLAIN for c in stream_id):
        return stream_id
    out: list[str] = []
    for char in stream_id:
        if char in _PLAIN:
            out.append(char)
        else:
            out.extend(f"{_ESCAPE}{byte:02x}" for byte in char.encode())
    return "".join(out)


def stream_id_of(token: str) -> str:
    """The stream id a token stands for; raises ValueError for a token no id maps to."""
    if _ESCAPE not in token:
        if not token or not all(c in _PLAIN for c in token):
            raise ValueError(f"{token!r} is not a stream token")
        return token
    raw = bytearray()
    at = 0
    while at < len(token):
        if token[at] == _ESCAPE:
            match = _ESCAPED.match(token, at)
            if match is None:
                raise ValueError(f"{token!r} is not a stream token")
            raw.append(int(match.group(1), 16))
            at = match.end()
        elif token[at] in _PLAIN:
            raw.append(ord(token[at]))
            at += 1
        else:
            raise ValueError(f"{token!r} is not a stream token")
    stream_id = raw.decode()
    if stream_token(stream_id) != token:  # e.g. an escaped plain character
        raise ValueError(f"{token!r} is not a stream token")
    return stream_id


def stream_subjects(stream_id: str) -> str:
    """Every subject of one stream's events: what the optimistic check names."""
    return f"{PREFIX}.{stream_token(stream_id)}.>"


def subject_of(stream_id: str, type_: str) -> str:
    if not type_ or any(not part or part in ("*", ">") for part in type_.split(".")):
        raise ValueError(f"event type {type_!r} cannot be subject tokens")
    if any(c.isspace() for c in type_):
        raise ValueError(f"event type {type_!r} cannot be subject tokens")
    return f"{PREFIX}.{stream_token(stream_id)}.{type_}"


def _headers(
    event_id: str, occurred_at: str, actor: str, correlation_id: str | None
) -> dict[str, str]:
    headers = {MSG_ID: event_id, OCCURRED_AT: occurred_at, ACTOR: actor}
    if correlation_id is not None:
        headers[CORRELATION_ID] = correlation_id
    for name, value in headers.items():
        if _HEADER_BREAKS.search(value):
            raise ValueError(f"{name} {value!r} holds a line break")
    return headers


def message_of(stream_id: str, new: NewEvent) -> tuple[str, str, dict[str, str], bytes]:
    """The event id, subject, headers and body that record ``new`` in ``stream_id``."""
    event_id = new.event_id or new_event_id()
    headers = _headers(event_id, format_instant(new.occurred_at), new.actor, new.correlation_id)
    return event_id, subject_of(stream_id, event_type(new.event)), headers, encode_event(new.event)


def is_lease(subject: str) -> bool:
    return subject == LEASE_SUBJECT


def row_of(position: int, subject: str, headers: dict[str, str] | None, body: bytes) -> CopiedRow:
    """The local copy's row for the message at ``position`` (its stream sequence)."""
    parts = subject.split(".", 3)
    if len(parts) != 4 or f"{parts[0]}.{parts[1]}" != PREFIX:
        raise MalformedMessage(subject, "not lablink.log.<stream>.<type>")
    try:
        stream_id = stream_id_of(parts[2])
    except ValueError as exc:
        raise MalformedMessage(subject, str(exc)) from exc
    headers = headers or {}
    try:
        event_id, occurred_at, actor = headers[MSG_ID], headers[OCCURRED_AT], headers[ACTOR]
    except KeyError as exc:
        raise MalformedMessage(subject, f"no {exc.args[0]} header") from exc
    try:
        payload = body.decode()
    except UnicodeDecodeError as exc:
        raise MalformedMessage(subject, "the body is not UTF-8") from exc
    return (
        position,
        event_id,
        stream_id,
        parts[3],
        occurred_at,
        actor,
        headers.get(CORRELATION_ID),
        payload,
    )


def message_of_row(row: StoredRow) -> tuple[str, dict[str, str], bytes]:
    """The subject, headers and body that record an event of a SQLite log as it is stored
    there (``lablink cluster import``): its text taken as it is, not decoded and encoded
    again, so that the copy ``row_of`` makes of it holds the very same columns."""
    _, event_id, stream_id, _, type_, occurred_at, actor, correlation_id, payload = row
    headers = _headers(event_id, occurred_at, actor, correlation_id)
    return subject_of(stream_id, type_), headers, payload.encode()
