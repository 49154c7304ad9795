"""What a notification says: the alarm as the API shows it plus the transition (webhook
JSON), the same as plain text with a link to the dashboard (email), and digests of many.

The alarm is read from the alarms view (the API's own source) when the message is made, so
it shows the alarm as it stands then: a ``raised`` message for an alarm acknowledged a
moment later already says so.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

SIGNATURE_HEADER = "X-LabLink-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"


def idempotency_key(alarm_id: str, channel: str, transition: str, digest: bool = False) -> str:
    """The receiver's dedup key: the same for every attempt, across restarts."""
    key = f"{alarm_id}:{channel}:{transition}"
    return f"{key}:digest" if digest else key


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def alarm_link(base_url: str, alarm: dict[str, Any]) -> str:
    """The dashboard's alarms page, filtered to the alarm's instrument or job."""
    query = {}
    if alarm.get("equipment_id"):
        query["equipment_id"] = alarm["equipment_id"]
    elif alarm.get("job_id"):
        query["job_id"] = alarm["job_id"]
    link = base_url.rstrip("/") + "/alarms"
    return f"{link}?{urlencode(query)}" if query else link


@dataclass(frozen=True)
class Message:
    """One message to one channel: a single alarm's transition, or a digest of several."""

    channel: str
    transition: str
    alarms: list[dict[str, Any]]  # as alarm_view gives them
    key: str
    digest: bool
    base_url: str

    def json_body(self) -> bytes:
        body: dict[str, Any] = {"channel": self.channel, "transition": self.transition}
        if self.digest:
            body.update(
                digest=True,
                count=len(self.alarms),
                alarms=self.alarms,
                url=self.base_url.rstrip("/") + "/alarms",
            )
        else:
            body.update(alarm=self.alarms[0], url=alarm_link(self.base_url, self.alarms[0]))
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    def subject(self) -> str:
        if self.digest:
            return f"[LabLink] {len(self.alarms)} alarms {self.transition} (digest)"
        alarm = self.alarms[0]
        where = alarm.get("equipment_id") or alarm.get("job_name") or alarm.get("kind")
        return f"[LabLink] {alarm['severity']} alarm {self.transition}: {where}"

    def text(self) -> str:
        if self.digest:
            lines = [
                f"{len(self.alarms)} alarms were {self.transition} within a minute; this channel",
                "sends one digest a minute while alarms come this fast.",
                "",
            ]
            for alarm in self.alarms:
                lines.append(
                    f"- {alarm['severity']} {alarm['kind']} {alarm['alarm_id']}: {alarm['message']}"
                )
            lines += ["", f"Alarms: {self.base_url.rstrip('/')}/alarms"]
            return "\n".join(lines) + "\n"
        alarm = self.alarms[0]
        lines = [
            f"Alarm {alarm['alarm_id']} was {self.transition}.",
            "",
            f"Severity:  {alarm['severity']}",
            f"Kind:      {alarm['kind']}",
            f"State:     {alarm['state']}",
            f"Message:   {alarm['message']}",
        ]
        for label, name in (
            ("Equipment", "equipment_id"),
            ("Job", "job_name"),
            ("Job id", "job_id"),
            ("Execution", "execution_id"),
            ("Raised at", "raised_at"),
        ):
            if alarm.get(name):
                lines.append(f"{label + ':':<10} {alarm[name]}")
        for label, name in (("Acknowledged", "acknowledged"), ("Cleared", "cleared")):
            done = alarm.get(name)
            if done:
                note = f" ({done['note']})" if done.get("note") else ""
                lines.append(f"{label} by {done['by']} at {done['at']}{note}")
        lines += ["", f"On the dashboard: {alarm_link(self.base_url, alarm)}"]
        return "\n".join(lines) + "\n"
