"""The receiver docs/notifications.md shows, run as written (a Python process of its own)
against the notifier: it prints a delivery once, drops the resend that carries the same
Idempotency-Key, lists a digest's alarms, and refuses a body whose signature does not match."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lablink.clock import ManualClock
from lablink.eventstore.sqlite import SQLiteEventStore
from lablink.notify.message import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, Message, signature
from tests.notify.conftest import SECRET, Start, raise_alarm, sent, webhook
from tests.support.eventually import eventually
from tests.support.serve import accepts, free_port

DOC = Path(__file__).parents[2] / "docs" / "notifications.md"


def receiver_source() -> str:
    found = re.search(r"```python\n(# python3 receiver\.py.*?)```", DOC.read_text(), re.S)
    assert found is not None, f"no receiver.py block in {DOC}"
    return found.group(1)


@pytest.fixture
def documented_receiver(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    script = tmp_path / "receiver.py"
    script.write_text(receiver_source())
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(script), SECRET, str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        yield port, process
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(timeout=30)


async def test_the_documented_receiver_verifies_and_drops_the_resend(
    store: SQLiteEventStore,
    clock: ManualClock,
    start: Start,
    documented_receiver: tuple[int, subprocess.Popen[str]],
) -> None:
    port, process = documented_receiver
    await eventually(lambda: process.poll() is None and accepts(port), what="the receiver up")
    url = f"http://127.0.0.1:{port}/hook"
    await start([webhook("ops", url)], clock)
    raise_alarm(store, "alarm_1")
    await eventually(lambda: sent(store))
    assert sent(store)[0].detail == "HTTP 204"

    body = b'{"alarm":{"alarm_id":"alarm_1","message":"the same again"},"transition":"raised"}'
    async with httpx.AsyncClient() as client:
        # What a crash between the send and the record leads to: the same key once more.
        again = await client.post(
            url,
            content=body,
            headers={
                SIGNATURE_HEADER: signature(SECRET, body),
                IDEMPOTENCY_HEADER: "alarm_1:ops:raised",
            },
        )
        assert again.status_code == 204
        forged = await client.post(
            url,
            content=body,
            headers={
                SIGNATURE_HEADER: signature("not-the-channel-secret", body),
                IDEMPOTENCY_HEADER: "alarm_2:ops:raised",
            },
        )
        assert forged.status_code == 401
        alarms = [{"alarm_id": f"alarm_{n}", "message": f"alarm_{n} failed"} for n in (2, 3)]
        digest = Message("ops", "raised", alarms, "alarm_2:ops:raised:digest", True, "http://lab/")
        body = digest.json_body()
        listed = await client.post(
            url,
            content=body,
            headers={SIGNATURE_HEADER: signature(SECRET, body), IDEMPOTENCY_HEADER: digest.key},
        )
        assert listed.status_code == 204
    process.terminate()
    out, _ = process.communicate(timeout=30)
    assert out.splitlines() == [
        "alarm_1:ops:raised alarm_1 alarm_1 failed",
        "alarm_2:ops:raised:digest alarm_2 alarm_2 failed",
        "alarm_2:ops:raised:digest alarm_3 alarm_3 failed",
    ]
