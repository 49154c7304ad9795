"""The notifier SIGKILLed mid-delivery, in a real `lablink serve`: the receiver has the request
(it could act on it) and the log has no record of it when the process dies. The restart on
the same data directory sends it once more with the same Idempotency-Key, records exactly one
``notification.sent``, and a further restart sends nothing again."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.notify.conftest import SECRET
from tests.notify.receiver import Receiver
from tests.notify.serving import FAILING, configure, logged, sent_keys, serve, webhook_table
from tests.support.eventually import eventually_sync
from tests.support.serve import Server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_a_kill_between_the_send_and_the_record_resends_once_with_the_same_key(
    tmp_path: Path, servers: list[Server]
) -> None:
    data = tmp_path / "data"
    # The receiver takes the request and never answers until released: the notifier has sent
    # and waits for the answer it would record. Its timeout outlasts the test's wait.
    receiver = Receiver(SECRET, hold=True)
    try:
        configure(
            data,
            webhook_table(
                "ops",
                receiver.url,
                timeout=300,
                transitions=["raised", "acknowledged", "cleared"],
            ),
        )
        server = serve(data, servers)
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=30) as client:
            created = client.post("/api/scheduler/jobs/create", json=FAILING)
            assert created.status_code == 200, created.text
            job_id = created.json()["job_id"]
            ran = client.post(f"/api/scheduler/jobs/{job_id}/run")
            assert ran.status_code == 200, ran.text
            eventually_sync(lambda: receiver.requests, what="the alarm's webhook request")
        server.crash()  # SIGKILL, by pid

        (raised,) = logged(data, "alarm.raised")
        alarm_id = raised["payload"]["alarm_id"]
        key = f"{alarm_id}:ops:raised"
        (first,) = receiver.requests
        assert (first.key, first.signature_ok) == (key, True)
        assert first.body["alarm"]["job_id"] == job_id
        # Killed between the send and the record: no attempt of it is on record.
        assert logged(data, "notification.") == []

        receiver.release()  # answers from now on
        server = serve(data, servers)
        eventually_sync(lambda: sent_keys(data), what="notification.sent after the restart")
        (sent,) = logged(data, "notification.sent")
        assert sent["stream_id"] == f"notification:{alarm_id}:ops"
        assert (sent["payload"]["idempotency_key"], sent["payload"]["attempt"]) == (key, 1)
        # The one resend the crash allows, and it carries the key the receiver drops it by.
        assert [r.key for r in receiver.requests] == [key, key]
        assert all(r.signature_ok for r in receiver.requests)
        # The same alarm as it stood (the link's port is the new start's).
        assert receiver.requests[1].body["alarm"] == first.body["alarm"]

        # A graceful stop and a third start: the delivery is on record, nothing goes again.
        # Acknowledge and clear (notified on this channel) are later in the log than the
        # raise, and delivered in log order: once they are in, a resend would have been too.
        server.terminate()
        assert server.proc.wait(timeout=60) == 0
        server = serve(data, servers)
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=30) as client:
            acked = client.post(f"/api/alarms/{alarm_id}/acknowledge", json={"note": "on it"})
            assert acked.status_code == 200, acked.text
            cleared = client.post(f"/api/alarms/{alarm_id}/clear", json={"note": "fixed"})
            assert cleared.status_code == 200, cleared.text
        expected = [key, f"{alarm_id}:ops:acknowledged", f"{alarm_id}:ops:cleared"]
        eventually_sync(lambda: sent_keys(data), until=lambda keys: keys == expected)
        assert [r.key for r in receiver.requests] == [key, *expected]
        acknowledged, cleared_request = receiver.requests[2:]
        assert acknowledged.body["alarm"]["acknowledged"]["note"] == "on it"
        assert cleared_request.body["alarm"]["cleared"]["note"] == "fixed"
        assert [r["payload"]["transition"] for r in logged(data, "notification.")] == [
            "raised",
            "acknowledged",
            "cleared",
        ]
    finally:
        receiver.close()
