"""What the scheduler and the equipment agents say to each other over NATS.

Subjects are keyed by equipment id, so a NATS user per agent can be limited to its own
instruments (see ``deploy/nats-server.conf``):

- ``lablink.agents.<equipment_id>.run``    request/reply: run one execution (an
  ``ExecutionRequest``); the reply says accepted, or duplicate when the agent has seen that
  execution id before (it never drives the instrument twice for one execution), or refused
  (a stale command: received later than the job's misfire grace time after it was due).
- ``lablink.agents.<equipment_id>.stop``   request/reply: stop an execution, safe state.
- ``lablink.agents.<equipment_id>.status`` request/reply: what the agent knows of an
  execution (after a scheduler restart).
- ``lablink.reports.<equipment_id>.presence``: core NATS, the agent's heartbeat (online)
  or goodbye (offline), with the instrument's identity.
- ``lablink.reports.<equipment_id>.exec.<execution_id>.<seq>``: progress and the result, in
  the JetStream stream ``LABLINK_REPORTS``, which the scheduler consumes; a result
  published while the scheduler is down is recorded when it comes back. The scheduler takes
  a report only on its own instrument's subject. The stream is a copy: nats-server
  acknowledges a report before its disk has it, and every result is on the agent's ledger's
  disk before it is reported, so the scheduler asks the agent (``status``) for what a lost
  report leaves it waiting for: at its start, and whenever it finds NATS back.
- ``lablink.reports.<equipment_id>.upload.<execution_id>.<seq>``: a capture whose upload to
  the object store (``LABLINK_DATA``) was still pending when its result was sent is followed
  by one more report of that execution, with ``stored`` set, once the store has the file (or
  can never have it). It is the only copy of that word, so it goes to a stream of its own,
  ``LABLINK_UPLOADS``, acknowledged once on nats-server's disk.

Core NATS request/reply gives "no responders" at once when no agent serves an instrument:
that is how the scheduler tells "equipment offline" within a second or two.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, NamedTuple

import msgspec

from lablink.events import ExecutionError
from lablink.instruments.execution import ExecutionRequest, Outcome

AGENTS_PREFIX = "lablink.agents"
REPORTS_PREFIX = "lablink.reports"
REPORTS_STREAM = "LABLINK_REPORTS"
# Every execution report of every instrument; presence messages stay out of the stream.
REPORTS_FILTER = f"{REPORTS_PREFIX}.*.exec.>"
PRESENCE_FILTER = f"{REPORTS_PREFIX}.*.presence"
REPORTS_CONSUMER = "lablink-scheduler"
# Uploads completed (or lost) after their result went: the only copy of that word.
UPLOADS_STREAM = "LABLINK_UPLOADS"
UPLOADS_FILTER = f"{REPORTS_PREFIX}.*.upload.>"
UPLOADS_CONSUMER = "lablink-scheduler-uploads"
# How long JetStream keeps reports nobody acknowledged: a scheduler down longer than this
# loses them (its executions are then interrupted on restart, as without agents).
REPORTS_MAX_AGE_SECONDS = 7 * 24 * 3600
# How long the scheduler's consumer has to acknowledge a report before JetStream offers it
# again (a result is acknowledged once its end is on the scheduler's record).
REPORTS_ACK_WAIT_SECONDS = 30.0

# The error type of an execution the agent found unfinished when it started again: it died
# under it, so nothing knows how the operation ended.
ABANDONED = "agent_restarted"
# The error type of a run command the agent received too late to run (see RunCommand).
STALE_COMMAND = "stale_command"

DEFAULT_HEARTBEAT_SECONDS = 1.0
# No heartbeat for this long: the agent is lost and its executions fail.
DEFAULT_HEARTBEAT_TIMEOUT_SECONDS = 5.0
# How long the scheduler waits for an agent to accept a run (no responders comes at once).
RUN_REQUEST_TIMEOUT_SECONDS = 2.0
# An instrument's queue changed: its presence goes before the next heartbeat, but no sooner
# than this after its last one (a bounded rate however busy the instrument is).
QUEUE_ANNOUNCE_SECONDS = 0.25
# The longest an agent holds a run command that came before its ``due_at``: a scheduler
# sends a fire decided ahead a fraction of a second early, so a longer wait is the two
# hosts' clocks disagreeing, and the agent does not wait on for it.
HOLD_LIMIT_SECONDS = 1.0


def run_subject(equipment_id: str) -> str:
    return f"{AGENTS_PREFIX}.{equipment_id}.run"


def stop_subject(equipment_id: str) -> str:
    return f"{AGENTS_PREFIX}.{equipment_id}.stop"


def status_subject(equipment_id: str) -> str:
    return f"{AGENTS_PREFIX}.{equipment_id}.status"


def presence_subject(equipment_id: str) -> str:
    return f"{REPORTS_PREFIX}.{equipment_id}.presence"


def report_subject(equipment_id: str, execution_id: str, seq: int) -> str:
    return f"{REPORTS_PREFIX}.{equipment_id}.exec.{execution_id}.{seq}"


def upload_subject(equipment_id: str, execution_id: str, seq: int) -> str:
    return f"{REPORTS_PREFIX}.{equipment_id}.upload.{execution_id}.{seq}"


def subject_equipment(subject: str) -> str:
    """The instrument a ``lablink.agents.…`` or ``lablink.reports.…`` subject is for."""
    parts = subject.split(".")
    return parts[2] if len(parts) > 2 else ""


class RunCommand(msgspec.Struct, frozen=True, kw_only=True):
    """What the scheduler sends: the execution, and the settings of its profile (resolved by
    the scheduler, which owns the profiles) when the job names one and profiles are known.

    ``due_at`` is when the execution was due to start (a scheduled fire: its scheduled time;
    a run-now: when it was asked for; a catch-up or a queued run: when the scheduler started
    it) and ``misfire_grace_time`` the job's. An agent that receives the command more than
    the grace time after ``due_at`` refuses it (``stale_command``) without touching the
    instrument: a backlog delivered after an outage never drives instruments at the wrong
    time. Commands without them (older schedulers) use the request's scheduled time and the
    job's grace time.

    ``lease_epoch``: in cluster mode, the scheduler lease's epoch of the replica that sent it.
    An agent refuses a command whose epoch is lower than the highest it has seen (a former
    leader, paused and resumed); 0 (one scheduler, no lease) is always accepted."""

    request: ExecutionRequest
    profile_settings: dict[str, Any] | None = None
    due_at: datetime | None = None
    misfire_grace_time: float | None = None
    lease_epoch: int = 0


class RunReply(msgspec.Struct, frozen=True, kw_only=True):
    status: Literal["accepted", "duplicate", "refused"]
    agent_id: str
    # For a duplicate: "running" or "finished" (its result is, or was, in the stream).
    state: str = ""
    reason: str = ""
    # For a refusal the agent records (a stale command): the execution's error.
    error: ExecutionError | None = None


class StopRequest(msgspec.Struct, frozen=True, kw_only=True):
    execution_id: str
    reason: str = ""


class StopReply(msgspec.Struct, frozen=True, kw_only=True):
    stopped: bool
    safe_state: dict[str, Any] = msgspec.field(default_factory=dict)
    error: str = ""


class StatusRequest(msgspec.Struct, frozen=True, kw_only=True):
    execution_id: str


class StatusReply(msgspec.Struct, frozen=True, kw_only=True):
    state: Literal["unknown", "running", "finished"]
    outcome: Outcome | None = None


class StoredData(msgspec.Struct, frozen=True, kw_only=True):
    """The object store confirmed a capture's upload after the execution's result was sent;
    or, ``lost`` set (why), the upload can never succeed (the agent's file is gone or changed)
    and there is no object: ``stored_at`` is then when the agent found out."""

    object: str
    size: int
    sha256: str
    stored_at: datetime
    lost: str = ""


class Report(msgspec.Struct, frozen=True, kw_only=True):
    """One step of an execution: progress (``outcome`` None), its end, or (``stored``) the
    upload of its capture completing after the end was reported."""

    execution_id: str
    job_id: str
    equipment_id: str
    agent_id: str
    seq: int
    at: datetime
    progress: float = 0.0
    message: str = ""
    data: dict[str, Any] = msgspec.field(default_factory=dict)
    outcome: Outcome | None = None
    stored: StoredData | None = None
    # On progress: when the operation began on the instrument (the agent's clock), so that
    # a run that times out there is recorded with it. Older agents send none.
    instrument_started_at: datetime | None = None


class QueueDepth(NamedTuple):
    """The executions in line for one instrument: ``queued`` were accepted (by its agent, or
    handed to the in-process executor) and wait for the instrument; ``running`` began on it
    and are not finished yet (the one the instrument runs, and any still reporting)."""

    queued: int = 0
    running: int = 0

    @property
    def depth(self) -> int:
        return self.queued + self.running


class Presence(msgspec.Struct, frozen=True, kw_only=True):
    """An agent's heartbeat for one instrument (``state`` online), or its goodbye.

    ``running`` names the executions the agent accepted for the instrument and has not
    finished; ``queued`` says how many of them still wait for the instrument (the others
    began on it). The agent sends its presence every heartbeat, and sooner when the queue
    changed (at most every ``QUEUE_ANNOUNCE_SECONDS`` per instrument). An agent older than
    ``queued`` sends 0: its queue reads as all running, the same depth; one older than
    ``started`` sends none."""

    equipment_id: str
    agent_id: str
    kind: str
    state: Literal["online", "offline"]
    identity: str = ""
    resource: str = ""
    running: tuple[str, ...] = ()
    reason: str = ""
    heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS
    queued: int = 0
    # Of ``running``, those whose operation began on the instrument, with when (the agent's
    # clock): how the scheduler knows it of an operation that reports no progress.
    started: dict[str, datetime] = msgspec.field(default_factory=dict)
    # The agent holds a run command that comes before its ``due_at`` until then (at most
    # ``HOLD_LIMIT_SECONDS``): the scheduler may send a fire decided ahead at once. An
    # older agent sends none, and its commands leave at their time.
    holds: bool = False

    @property
    def queue(self) -> QueueDepth:
        queued = min(self.queued, len(self.running))
        return QueueDepth(queued=queued, running=len(self.running) - queued)


encoder = msgspec.json.Encoder()
