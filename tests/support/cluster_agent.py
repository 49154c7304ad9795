"""A real `lablink agent` beside the cluster's replicas (issue 18), and what it did.

- ``lab_agent``: the agent of deploy/lab.toml (``lab-pc-1``), its instruments power_supply_1
  and multimeter_1 on a private copy of the simulated bench, connected to the cluster as its
  own NATS user ``agent-lab-pc-1`` (which may use only those instruments' subjects): a
  ``serve.Server`` running `lablink agent --config`, so the ``servers`` fixture stops it.
- ``ledger_executions`` and ``highest_epoch``: the agent's ledger, read from its file.
- ``RunTap``: every run command the replicas send and every reply the agent gives, as the
  wire carries them (the scheduler's user may read both: the run subjects and its own
  inboxes), with the lease epoch each command carried.
- ``send_run``: a run command sent as the scheduler's user, and the agent's reply.
"""

from __future__ import annotations

import asyncio
import dataclasses
import queue
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from lablink.bus.options import inbox_prefix
from lablink.equipment_agent.config import NatsConfig
from lablink.eventstore.loop_thread import LoopThread
from lablink.instruments.protocol import AGENTS_PREFIX, RunCommand, RunReply, encoder, run_subject
from tests.support.agent_lab import bench_config, write_lab_toml
from tests.support.bench import copy_bench
from tests.support.nats_cluster import PASSWORDS, SCHEDULER
from tests.support.serve import Server

AGENT_ID = "lab-pc-1"
AGENT_USER = (f"agent-{AGENT_ID}", PASSWORDS["NATS_AGENT_LAB_PC_1_PASSWORD"])
# The instruments deploy/nats-server.conf lets agent-lab-pc-1 serve.
INSTRUMENTS = ("power_supply_1", "multimeter_1")


def lab_agent(folder: Path, url: str, *, heartbeat_seconds: float = 0.5) -> Server:
    """`lablink agent --config folder/lab.toml`, started (wait for its "agent started")."""
    config = bench_config(
        copy_bench(folder / "bench"),
        folder / "data",
        agent_id=AGENT_ID,
        heartbeat_seconds=heartbeat_seconds,
        only=INSTRUMENTS,
    )
    config = dataclasses.replace(config, nats=NatsConfig(user=AGENT_USER[0]))
    toml = write_lab_toml(folder / "lab.toml", config, url)
    # The password from the environment, as deploy/lab.toml says; the url and user in the file.
    settings = {"LABLINK_NATS_PASSWORD": AGENT_USER[1]}
    return Server(folder, 0, settings, command=("agent", "--config", str(toml)))


def ledger_path(folder: Path) -> Path:
    return folder / "data" / "agents" / f"{AGENT_ID}.db"


def _read(folder: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{ledger_path(folder)}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def ledger_executions(folder: Path) -> dict[str, str | None]:
    """execution id -> its outcome's status (None: not finished), as the ledger holds them."""
    rows = _read(folder, "SELECT execution_id, outcome FROM executions")
    return {
        execution_id: None if outcome is None else msgspec.json.decode(outcome)["status"]
        for execution_id, outcome in rows
    }


def highest_epoch(folder: Path) -> int:
    """The highest scheduler lease epoch the agent has accepted a command of (0: none)."""
    rows = _read(folder, "SELECT highest FROM lease_epochs WHERE id = 1")
    return int(rows[0][0]) if rows else 0


def logged(server: Server, event: str) -> list[dict[str, Any]]:
    """The lines of ``event`` the child has logged so far."""
    while True:
        try:
            server.seen.append(server.lines.get_nowait())
        except queue.Empty:
            break
    return [line for line in server.seen if line.get("event") == event]


@dataclass(frozen=True)
class Exchange:
    """One run command and the agent's reply to it."""

    execution_id: str
    epoch: int
    status: str
    reason: str


class RunTap:
    """Listens, as the scheduler's user, to the run commands of the cluster and the agent's
    replies (on the scheduler's inboxes), on an event loop thread of its own."""

    def __init__(self, url: str) -> None:
        self._loop = LoopThread("run-tap")
        # reply subject -> the command; replies (reply subject, reply) in the order they came.
        self._commands: dict[str, RunCommand] = {}
        self._replies: list[tuple[str, RunReply]] = []
        self._lock = threading.Lock()  # the loop's thread adds, the test's reads
        self._nc: NATS = self._loop.call(self._start(url), 30)

    async def _start(self, url: str) -> NATS:
        nc = await nats.connect(
            servers=url.split(","), user=SCHEDULER[0], password=SCHEDULER[1], name="run-tap"
        )
        await nc.subscribe(f"{AGENTS_PREFIX}.*.run", cb=self._command)
        # The agent's replies come from its one connection: in the order it gave them.
        await nc.subscribe(f"{inbox_prefix(SCHEDULER[0])}.>", cb=self._reply)
        await nc.flush()
        return nc

    async def _command(self, msg: Msg) -> None:
        if msg.reply:
            command = msgspec.json.decode(msg.data, type=RunCommand)
            with self._lock:
                self._commands[msg.reply] = command

    async def _reply(self, msg: Msg) -> None:
        # Everything else on the inboxes (JetStream's answers, the copies' deliveries) is
        # not a reply; one that decodes as one by chance matches no command's subject.
        try:
            reply = msgspec.json.decode(msg.data, type=RunReply)
        except msgspec.DecodeError:
            return
        with self._lock:
            self._replies.append((msg.subject, reply))

    def exchanges(self) -> list[Exchange]:
        """The replies whose command was seen, in the order the agent gave them."""
        with self._lock:
            commands = dict(self._commands)
            replies = list(self._replies)
        found = []
        for subject, reply in replies:
            command = commands.get(subject)
            if command is not None:
                found.append(
                    Exchange(
                        execution_id=command.request.execution_id,
                        epoch=command.lease_epoch,
                        status=reply.status,
                        reason=reply.reason,
                    )
                )
        return found

    def close(self) -> None:
        async def close() -> None:
            await self._nc.close()

        try:
            self._loop.call(close(), 30)
        finally:
            self._loop.stop()


def accepted_below_seen(exchanges: list[Exchange]) -> Iterator[Exchange]:
    """Commands the agent took (accepted, or answered as a duplicate) although it had taken
    one of a higher epoch before: a former leader's command that got through."""
    highest = 0
    for exchange in exchanges:
        if exchange.status in ("accepted", "duplicate"):
            if exchange.epoch < highest:
                yield exchange
            highest = max(highest, exchange.epoch)


def send_run(url: str, command: RunCommand) -> RunReply:
    """``command`` to its instrument's agent as the scheduler's user; the agent's reply."""

    async def send() -> RunReply:
        nc = await nats.connect(
            servers=url.split(","),
            user=SCHEDULER[0],
            password=SCHEDULER[1],
            inbox_prefix=inbox_prefix(SCHEDULER[0]),
            name="former-leader",
        )
        try:
            subject = run_subject(command.request.spec.equipment_id)
            msg = await nc.request(subject, encoder.encode(command), timeout=30)
        finally:
            await nc.close()
        return msgspec.json.decode(msg.data, type=RunReply)

    return asyncio.run(send())
