"""Every NATS subject LabLink uses, in one place.

Events: ``lablink.events.<kind>.<action>.<stream>.<equipment>`` where ``<kind>.<action>`` is
the event type (``job.created``, ``execution.failed``, ``alarm.raised``…), ``<stream>`` the
job, profile, alarm or key id and ``<equipment>`` the instrument the event concerns (``_`` when
none). So a subscriber filters with wildcards:

- everything about one job: ``lablink.events.*.*.job_ab12.*``
- every failed execution: ``lablink.events.execution.failed.>``
- everything on one instrument: ``lablink.events.*.*.*.power_supply_1``

Alarms are also published on ``lablink.alarms.<severity>.<equipment_id>``.
"""

from __future__ import annotations

import re

STREAM = "LABLINK_EVENTS"
EVENTS_PREFIX = "lablink.events"
EVENTS_ALL = f"{EVENTS_PREFIX}.>"
ALARMS_PREFIX = "lablink.alarms"
# Cluster mode: where each replica says it is alive and how far it is (lablink.cluster.presence),
# a KV bucket (its stream: KV_LABLINK_REPLICAS, its subjects $KV.LABLINK_REPLICAS.<replica>).
REPLICAS_BUCKET = "LABLINK_REPLICAS"
# Cluster mode: a run-now asked of a follower, forwarded to the replica holding the scheduler
# lease, which alone serves this subject (request/reply; lablink.cluster.forwarding).
CLUSTER_RUN = "lablink.cluster.run"
NONE = "_"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def token(value: str | None) -> str:
    """A value as one subject token: ids are validated at the API, but the log may hold
    anything (stream ids like ``apikey:ab12``), so unsafe characters become ``-``."""
    if not value:
        return NONE
    return _UNSAFE.sub("-", value)[:64] or NONE


def event_subject(event_type: str, stream_id: str, equipment_id: str | None) -> str:
    kind, _, action = event_type.partition(".")
    return ".".join(
        (EVENTS_PREFIX, token(kind), token(action), token(stream_id), token(equipment_id))
    )


def event_filter(
    event_type: str | None = None, job_id: str | None = None, equipment_id: str | None = None
) -> str:
    kind, action = ("*", "*")
    if event_type:
        kind, _, rest = event_type.partition(".")
        action = rest or "*"
    return ".".join(
        (
            EVENTS_PREFIX,
            token(kind) if kind != "*" else "*",
            token(action) if action != "*" else "*",
            token(job_id) if job_id else "*",
            token(equipment_id) if equipment_id else "*",
        )
    )


def alarm_subject(severity: str, equipment_id: str | None) -> str:
    return f"{ALARMS_PREFIX}.{token(severity)}.{token(equipment_id)}"
