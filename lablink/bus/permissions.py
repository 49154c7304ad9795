"""Who may do what on LabLink's bus: one NATS user per role, and the subjects each may use.

Pure data, rendered into a nats-server configuration by ``lablink.bus.serverconf`` for the
private server of `lablink serve` and for ``deploy/nats-server.conf`` alike, so the two never
differ. The roles:

- ``scheduler`` (`lablink serve`, `lablink scheduler`, `lablink relay`): owns the streams. It
  publishes the log, alarms and run commands, consumes agents' reports, and uses the JetStream
  API for its streams and consumers. In cluster mode it appends to the record
  (``lablink.log.>`` in the stream ``LABLINK_LOG``, which it makes) and puts its presence in
  the ``LABLINK_REPLICAS`` bucket; it may not delete or purge the record.
- ``agent-<agent_id>``, one per equipment agent: only its own instruments. It receives their
  run/stop/status requests on ``lablink.agents.<equipment_id>.>`` and answers them (responses
  only: ``allow_responses``), and publishes their presence and reports on
  ``lablink.reports.<equipment_id>.>``; JetStream's acks of those reports come back to its own
  inbox. It cannot publish a run command, nor a report for another instrument. Of the
  JetStream API it may only use the captures' object store ``LABLINK_DATA`` (made by the
  scheduler): read the stream's info and an object's description, put chunks and
  descriptions, and purge the chunks of an upload it replaces or that failed. The store keys
  objects by name, not by agent, so an agent could overwrite another agent's capture: the
  bucket is shared by the lab's agents, as the reports stream is.
- ``subscriber`` (`lablink events tail`, `lablink alarms watch`, dashboards, `lablink audit`):
  reads. It may create and use consumers on ``LABLINK_EVENTS``, read the signed checkpoints
  of ``LABLINK_AUDIT`` message by message, read the cluster's record and the replicas'
  presence message by message (`lablink cluster status`), and subscribe to events and
  alarms; it
  publishes nothing under ``lablink.>`` and cannot create, change, purge or delete a stream.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from lablink.bus.audit_stream import AUDIT_STREAM
from lablink.bus.data_bucket import DATA_STREAM, METAS, chunk_subject
from lablink.bus.options import inbox_prefix
from lablink.bus.subjects import ALARMS_PREFIX, EVENTS_ALL, REPLICAS_BUCKET, STREAM
from lablink.events.data import DATA_BUCKET
from lablink.eventstore.record_link import RECORD_STREAM
from lablink.instruments.protocol import AGENTS_PREFIX, REPORTS_PREFIX

Role = Literal["scheduler", "agent", "subscriber"]

SCHEDULER = "scheduler"
SUBSCRIBER = "subscriber"
AGENT_PREFIX = "agent-"
# The agents' subjects, from the protocol the scheduler and the agents speak.
AGENTS = AGENTS_PREFIX
REPORTS = REPORTS_PREFIX


def agent_user(agent_id: str) -> str:
    return f"{AGENT_PREFIX}{agent_id}"


@dataclass(frozen=True)
class Permissions:
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    allow_responses: bool = False
    # Subjects refused though ``publish`` allows them (nats-server's deny list wins).
    publish_deny: tuple[str, ...] = ()


def record_api(stream: str = RECORD_STREAM) -> tuple[str, ...]:
    """Reading the cluster's record and the replicas' presence, as `lablink cluster status`
    does: stream info and message gets, no consumer."""
    api = "$JS.API"
    return tuple(
        f"{api}.STREAM.{verb}.{name}"
        for name in (stream, f"KV_{REPLICAS_BUCKET}")
        for verb in ("INFO", "MSG.GET")
    )


def scheduler_permissions() -> Permissions:
    api = "$JS.API"
    return Permissions(
        # $O.LABLINK_DATA.>: deleting a capture (retention, the byte bound) publishes its
        # description's tombstone there. Cluster mode: the record's events and lease are
        # under lablink.log.> (in lablink.>), its stream's API under $JS.API.> (the scheduler
        # makes it), the replicas' presence under $KV.LABLINK_REPLICAS.>.
        publish=(
            "lablink.>",
            "$JS.API.>",
            "$JS.ACK.>",
            "$JS.FC.>",
            "_INBOX.>",
            f"$O.{DATA_BUCKET}.>",
            f"$KV.{REPLICAS_BUCKET}.>",
        ),
        subscribe=("lablink.>", "_INBOX.>", "$JS.EVENT.>"),
        # The record only grows: no replica deletes or purges it, nor one of its messages.
        publish_deny=(
            f"{api}.STREAM.DELETE.{RECORD_STREAM}",
            f"{api}.STREAM.PURGE.{RECORD_STREAM}",
            f"{api}.STREAM.MSG.DELETE.{RECORD_STREAM}",
        ),
    )


def data_store_permissions() -> tuple[str, ...]:
    """What putting a capture in the ``LABLINK_DATA`` object store takes
    (``equipment_agent.upload``)."""
    api, stream = "$JS.API", DATA_STREAM
    return (
        chunk_subject(">"),
        METAS.format(bucket=DATA_BUCKET, name=">"),
        f"{api}.STREAM.INFO.{stream}",
        f"{api}.STREAM.MSG.GET.{stream}",
        f"{api}.STREAM.PURGE.{stream}",
    )


def agent_permissions(user: str, instruments: Iterable[str]) -> Permissions:
    ids = sorted(set(instruments))
    return Permissions(
        publish=(*(f"{REPORTS}.{eid}.>" for eid in ids), *data_store_permissions()),
        subscribe=(*(f"{AGENTS}.{eid}.>" for eid in ids), f"{inbox_prefix(user)}.>"),
        allow_responses=True,
    )


def subscriber_permissions(user: str = SUBSCRIBER) -> Permissions:
    api = "$JS.API"
    return Permissions(
        publish=(
            f"{api}.INFO",
            f"{api}.STREAM.NAMES",  # nats-py finds a subject's stream by name
            f"{api}.STREAM.INFO.{STREAM}",
            f"{api}.STREAM.MSG.GET.{STREAM}",
            f"{api}.CONSUMER.CREATE.{STREAM}",
            f"{api}.CONSUMER.CREATE.{STREAM}.>",
            f"{api}.CONSUMER.INFO.{STREAM}.>",
            f"{api}.CONSUMER.DELETE.{STREAM}.>",
            f"{api}.CONSUMER.MSG.NEXT.{STREAM}.>",
            f"$JS.ACK.{STREAM}.>",
            "$JS.FC.>",  # flow control of ordered consumers
            # The signed checkpoints, read one by one (`lablink audit checkpoints`).
            f"{api}.STREAM.INFO.{AUDIT_STREAM}",
            f"{api}.STREAM.MSG.GET.{AUDIT_STREAM}",
            # Cluster mode's record and presence, read by `lablink cluster status`.
            *record_api(),
        ),
        subscribe=(
            EVENTS_ALL,
            f"{ALARMS_PREFIX}.>",
            f"$JS.EVENT.ADVISORY.STREAM.CREATED.{STREAM}",
            f"{inbox_prefix(user)}.>",
        ),
    )


def permissions_of(role: Role, user: str, instruments: Iterable[str] = ()) -> Permissions:
    if role == "scheduler":
        return scheduler_permissions()
    if role == "agent":
        return agent_permissions(user, instruments)
    return subscriber_permissions(user)
