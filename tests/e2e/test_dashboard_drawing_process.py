"""The dashboard's drawing process under a real `lablink serve` (dashboard/draw_process.py):
a page's pushed part comes from a child interpreter of the server's, at a lower priority; one
killed by its pid is started again for the next drawing, and a server killed outright leaves
none behind."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import httpx
import pytest

from lablink.dashboard.draw_main import NICE
from tests.e2e.test_e2e_serve import QUICK_START
from tests.support.eventually import eventually_sync
from tests.support.serve import Process, Server, alive, children, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.nats, pytest.mark.slow, pytest.mark.timeout(300)]

WAIT = 60.0


class Cards:
    """The equipment list's parts as the page's stream sends them, read on a thread."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.got: list[str] = []
        # Set once the stream answered: it sends what the log records from then on.
        self.open = threading.Event()
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            with (
                httpx.Client(timeout=httpx.Timeout(WAIT, read=WAIT)) as client,
                client.stream("GET", f"{self.url}/live/equipment") as response,
            ):
                self.open.set()
                event = ""
                for line in response.iter_lines():
                    if self.stop.is_set():
                        return
                    if line.startswith("event:"):
                        event = line.split(":", 1)[1].strip()
                    elif line.startswith("data:") and event == "card-list":
                        self.got.append(line.split(":", 1)[1])
        except BaseException as exc:  # seen by the test, not lost on the thread
            if not self.stop.is_set():
                self.error = exc

    def count(self) -> int:
        if self.error is not None:
            raise self.error
        return len(self.got)


def drawing_processes(server: Server) -> list[Process]:
    return [p for p in children(server.proc.pid) if "draw_main" in p[2]]


def run_now(client: httpx.Client, job_id: str) -> None:
    answer = client.post(f"/api/scheduler/jobs/{job_id}/run")
    assert answer.status_code == 200, answer.text


def test_parts_come_from_a_drawing_process_that_is_restarted_and_dies_with_the_server(
    tmp_path: Path, servers: list[Server]
) -> None:
    port = free_port()
    server = Server(tmp_path / "data", port, {"LABLINK_AUTH": "off"})
    servers.append(server)
    server.listening()
    url = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=url, timeout=WAIT) as client:
        created = client.post("/api/scheduler/jobs/create", json=QUICK_START)
        assert created.status_code == 200, created.text
        job_id = created.json()["job_id"]
        cards = Cards(url)
        try:
            assert cards.open.wait(WAIT), cards.error
            # An execution names the list's topics: its stream draws the list anew.
            run_now(client, job_id)
            eventually_sync(cards.count, until=lambda n: n >= 1, what="the list drawn")
            assert "power_supply_1" in "".join(cards.got)
            drawing = drawing_processes(server)
            assert len(drawing) == 1
            first = drawing[0]
            # Below the server's priority: a core the scheduler wants is the scheduler's.
            below = os.getpriority(os.PRIO_PROCESS, first[0])
            assert below == os.getpriority(os.PRIO_PROCESS, server.proc.pid) + NICE

            os.kill(first[0], signal.SIGKILL)
            eventually_sync(lambda: alive(first), until=lambda a: not a, what="killed")
            seen = cards.count()
            run_now(client, job_id)
            eventually_sync(cards.count, until=lambda n: n > seen, what="the list drawn again")
            again = drawing_processes(server)
            assert len(again) == 1
            assert again[0] != first
        finally:
            cards.stop.set()
    server.crash()
    # Its stdin ended with the server: the drawing process exits (init reaps it).
    eventually_sync(lambda: alive(again[0]), until=lambda a: not a, what="the orphan gone")
