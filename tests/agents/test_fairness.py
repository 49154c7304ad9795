"""Per-instrument fairness under load (issue 19, point 5): one instrument's backlog never holds up
another's commands, and each instrument's queue depth is visible in /health and the equipment
view while it lasts.

The slow instrument is held by a gate on its port: every exchange with it waits until the test
opens the gate, so "slow" is as slow as the test needs, on any machine. What is asserted is
what happens while it is held (the other instruments' executions all end, the slow one's
backlog waits in its own line), never how long anything took.

Through a real nats-server to an in-process agent driving pyvisa-sim instruments; then the
in-process bench (``LABLINK_NATS=off``) under the engine."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec
import nats
import pytest

from lablink.api.app import create_app
from lablink.api.context import ApiContext
from lablink.application import JobService
from lablink.bus.connection import ensure_stream
from lablink.bus.options import NatsOptions
from lablink.bus.server import NatsServer
from lablink.clock import ManualClock
from lablink.dashboard.plugin import DashboardPlugin
from lablink.equipment_agent.agent import Agent
from lablink.equipment_agent.bench import PortWrapper, open_simulated_bench
from lablink.equipment_agent.inprocess import InProcessExecutor
from lablink.equipment_agent.ledger import Ledger
from lablink.health import Health
from lablink.instruments.execution import ExecutionRequest, Outcome
from lablink.instruments.protocol import (
    REPORTS_FILTER,
    REPORTS_MAX_AGE_SECONDS,
    REPORTS_STREAM,
    Presence,
    QueueDepth,
    RunCommand,
    RunReply,
    encoder,
    run_subject,
)
from lablink.instruments.scpi import MessagePort
from lablink.logstore import open_store
from lablink.repository import JobRepository
from lablink.scheduler.engine import Engine
from lablink.settings import Settings
from tests.support.agent_lab import FINAL, AgentLab, bench_config
from tests.support.bench import ProgressLog, RecordingPort, copy_bench, execution_request
from tests.support.eventually import eventually
from tests.support.views import view_rows

SLOW = "power_supply_1"
OTHERS = ("multimeter_1", "oscilloscope_1", "scope_1", "load_1", "sensor_1")
MEASURE_SLOW = {
    "schedule_type": "measurement",
    "equipment_id": SLOW,
    "parameters": {"command": "get_voltage"},
}
# The load: 1,000 jobs on the six instruments, all due at the same instant; half of
# them on the slow instrument.
BACKLOG = 500
EACH_OTHER = 100
# The power supply's safe state, and a measurement of it, on the wire.
SAFE_STATE_SCPI = "OUTP 0"
MEASURE_SCPI = "MEAS:VOLT?"


class Gate:
    """Opened, every exchange on the ports it wraps goes through; closed, each waits until it
    opens again (the instrument takes as long as the test says)."""

    def __init__(self) -> None:
        self._open = threading.Event()
        self._open.set()
        # Set once an exchange is waiting at the closed gate.
        self.holding = threading.Event()

    def close(self) -> None:
        self.holding.clear()
        self._open.clear()

    def open(self) -> None:
        self._open.set()

    def wait(self) -> None:
        if not self._open.is_set():
            self.holding.set()
            # Bounded, so that a failed test's worker thread cannot outlive it for ever.
            self._open.wait(timeout=120)


class GatedPort:
    def __init__(self, inner: MessagePort, gate: Gate) -> None:
        self.inner, self.gate = inner, gate

    def write(self, message: str) -> int:
        self.gate.wait()
        return self.inner.write(message)

    def query(self, message: str) -> str:
        self.gate.wait()
        return self.inner.query(message)


def gated(gate: Gate, recorded: dict[str, RecordingPort] | None = None) -> PortWrapper:
    """A PortWrapper: ``SLOW`` behind ``gate`` (its exchanges recorded as they pass), the
    others as they are."""

    def wrap(equipment_id: str, port: MessagePort) -> MessagePort:
        if equipment_id != SLOW:
            return port
        recording = RecordingPort(GatedPort(port, gate))
        if recorded is not None:
            recorded[equipment_id] = recording
        return recording

    return wrap


async def fetch(context: ApiContext, *paths: str) -> list[httpx.Response]:
    """GET each path from the app with its dashboard, as `lablink serve` mounts them."""
    app = create_app(context, plugins=[DashboardPlugin(context.settings.data_dir)])
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        answers = [await client.get(path) for path in paths]
    assert [a.status_code for a in answers] == [200] * len(paths), [a.text for a in answers]
    return answers


async def api_get(context: ApiContext, *paths: str) -> list[dict[str, Any]]:
    return [answer.json() for answer in await fetch(context, *paths)]


def api_context(
    tmp_path: Path,
    clock: ManualClock,
    store: Any,
    service: JobService,
    engine: Engine,
    health: Health | None = None,
) -> ApiContext:
    settings = Settings(data_dir=tmp_path, timezone="UTC", auth=False, allowed_hosts=("test",))
    return ApiContext(
        settings=settings,
        clock=clock,
        store=store,
        service=service,
        engine=engine,
        auth_enabled=False,
        health=health,
    )


QueueSeen = dict[str, tuple[int, int]]


async def queues_shown(context: ApiContext) -> dict[str, QueueSeen]:
    """Each instrument's (queued, running) as /health's ``agent.<id>`` details, /health's
    agents summary and the equipment API (list and single) show it now."""
    health, listed, single = await api_get(
        context, "/health", "/api/equipment", f"/api/equipment/{SLOW}"
    )
    components = health["components"]
    ids = (SLOW, *OTHERS)
    details = {eid: components[f"agent.{eid}"]["details"] for eid in ids}
    return {
        "health": {eid: (d.get("queued", -1), d.get("running", -1)) for eid, d in details.items()},
        "summary": {
            eid: (q["queued"], q["running"]) for eid, q in health["agents"]["queues"].items()
        },
        "equipment": {
            e["equipment_id"]: (e["queue"]["queued"], e["queue"]["running"])
            for e in listed["equipment"]
            if e["queue"] is not None
            and e["queue"]["depth"] == sum((e["queue"]["queued"], e["queue"]["running"]))
        },
        "single": {
            SLOW: (single["equipment"]["queue"]["queued"], single["equipment"]["queue"]["running"])
        },
    }


def everywhere(seen: dict[str, QueueSeen], expected: QueueSeen) -> bool:
    return (
        all(
            {eid: place.get(eid) for eid in expected} == expected
            for name, place in seen.items()
            if name != "single"
        )
        and seen["single"][SLOW] == expected[SLOW]
    )


def statuses(lab: AgentLab, execution_ids: Sequence[str]) -> dict[str, int]:
    marks = ",".join("?" * len(execution_ids))
    rows = lab.rows(
        f"SELECT status, count(*) AS n FROM executions WHERE execution_id IN ({marks})"
        " GROUP BY status",
        *execution_ids,
    )
    return {row["status"]: row["n"] for row in rows}


def ended(lab: AgentLab, execution_ids: Sequence[str]) -> Callable[[], int]:
    return lambda: sum(n for s, n in statuses(lab, execution_ids).items() if s in FINAL)


# -- through NATS to an agent -------------------------------------------------------------------


@pytest.fixture
async def loaded_lab(
    tmp_path: Path, nats_server: NatsServer, clock: ManualClock
) -> AsyncIterator[AgentLab]:
    """The scheduler and the agent share this test's event loop: on a crowded machine, 1,000
    executions can keep a heartbeat or a reply waiting for seconds. Neither the loss of an
    agent nor the request timeout is what this lab tests, so both are generous."""
    lab = AgentLab(
        tmp_path / "scheduler.db", nats_server.url, clock, heartbeat_timeout=300, run_timeout=60
    )
    await lab.start()
    try:
        yield lab
    finally:
        await lab.close()


@pytest.mark.nats
@pytest.mark.slow
async def test_a_slow_instruments_backlog_never_holds_up_the_others_and_shows_as_its_queue(
    loaded_lab: AgentLab, tmp_path: Path
) -> None:
    lab = loaded_lab
    gate = Gate()
    config = bench_config(copy_bench(tmp_path / "bench"), tmp_path / "data")
    agent = await lab.start_agent(config, wrap=gated(gate))
    fire = lab.clock.now() + timedelta(minutes=5)
    aligned = {
        "trigger_type": "interval",
        "interval_hours": None,
        "interval_minutes": 60,
        "start_date": fire.isoformat(),
        "enabled": True,
    }
    slow_jobs = [lab.create({**MEASURE_SLOW, **aligned}) for _ in range(BACKLOG)]
    other_jobs = [
        lab.create({"schedule_type": "state_capture", "equipment_id": eid, **aligned})
        for _ in range(EACH_OTHER)
        for eid in OTHERS
    ]
    context = api_context(
        tmp_path, lab.clock, lab.store, lab.service, lab.engine, lab.executor.health
    )
    gate.close()
    try:
        # Every job is due at once: one tick sends all 1,000 commands.
        assert await lab.at(fire) == len(slow_jobs) + len(other_jobs)
        started = {r["job_id"]: r["execution_id"] for r in lab.rows("SELECT * FROM executions")}
        slow_runs = [started[j] for j in slow_jobs]
        other_runs = [started[j] for j in other_jobs]

        # The other five instruments finish all their work while the slow one is held
        # with its whole backlog in front of it.
        await eventually(ended(lab, other_runs), until=lambda n: n == len(other_runs))
        assert statuses(lab, other_runs) == {"completed": len(other_runs)}
        assert gate.holding.is_set()
        assert statuses(lab, slow_runs) == {"running": len(slow_runs)}
        # Not one of the slow backlog began on its instrument but the one held at the gate:
        # the others' executions did not wait behind any of it.
        _, accepted = await eventually(
            lambda: agent.instrument_queues()[SLOW],
            until=lambda found: found[0] == QueueDepth(queued=BACKLOG - 1, running=1),
        )
        assert sorted(accepted) == sorted(slow_runs)
        assert statuses(lab, slow_runs) == {"running": len(slow_runs)}

        # The queue as /health and the equipment view show it, from the agent's presence.
        idle = dict.fromkeys(OTHERS, (0, 0))
        backlog = {SLOW: (BACKLOG - 1, 1), **idle}
        seen = await eventually(
            lambda: queues_shown(context), until=lambda s: everywhere(s, backlog)
        )
        assert seen["equipment"][SLOW] == (BACKLOG - 1, 1)
        # The dashboard's equipment pages: a queue column, and a line on the instrument's.
        listed, one = await fetch(context, "/equipment", f"/equipment/{SLOW}")
        row = listed.text[listed.text.index(f'data-equipment="{SLOW}"') :]
        row = row[: row.index("</tr>")]
        shown = f'<span data-queue-depth="{BACKLOG}">{BACKLOG - 1} queued · 1 running</span>'
        assert shown in row
        assert shown in one.text
        assert listed.text.count('data-queue-depth="0">0 queued · 0 running') == len(OTHERS)
    finally:
        gate.open()

    await eventually(ended(lab, slow_runs), until=lambda n: n == len(slow_runs))
    assert statuses(lab, slow_runs) == {"completed": len(slow_runs)}
    # No command waited so long that the scheduler gave up on it (equipment_offline).
    assert lab.rows("SELECT * FROM executions WHERE status != 'completed'") == []
    # The slow instrument took its backlog first come, first served, one at a time.
    rows = {
        r["execution_id"]: r
        for r in lab.rows(
            f"SELECT * FROM executions WHERE equipment_id = '{SLOW}' ORDER BY instrument_started_at"
        )
    }
    spans = [(rows[x]["instrument_started_at"], rows[x]["instrument_ended_at"]) for x in rows]
    assert all(end <= nxt for (_, end), (nxt, _) in itertools.pairwise(spans))
    # And its queue is empty again wherever it is shown.
    drained = {SLOW: (0, 0), **idle}
    await eventually(lambda: queues_shown(context), until=lambda s: everywhere(s, drained))
    # The API alone (no runtime health registry) answers the same from the presences.
    alone = api_context(tmp_path, lab.clock, lab.store, lab.service, lab.engine)
    assert everywhere(await queues_shown(alone), drained)
    context.close()
    alone.close()


@pytest.mark.nats
async def test_a_burst_on_one_instrument_is_accepted_together_not_one_disk_write_each(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    """nats-py runs one subscription's callbacks one at a time: a run command accepted
    inline would hold the next one of its instrument for its own ledger commit, so a burst of
    N took N disk waits in a row (and the scheduler's 2 s request timed out behind them).

    The commands come straight over NATS, as a scheduler sends them; no scheduler takes
    their results (they stay in the stream)."""
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await ensure_stream(
        js, REPORTS_STREAM, [REPORTS_FILTER], replicas=1, max_age=REPORTS_MAX_AGE_SECONDS
    )
    config = bench_config(copy_bench(tmp_path / "bench"), tmp_path / "data")
    agent = Agent(config, NatsOptions(url=nats_server.url))
    await agent.start()
    ledger = agent._ledger
    assert isinstance(ledger, Ledger)
    assert agent._nc is not None
    agent_nc = agent._nc
    # The ledger's first commit waits until every command of the burst reached the agent.
    release = threading.Event()
    commits: list[list[str]] = []
    commit = ledger.commit

    def held(
        commands: Sequence[tuple[str, str, str]], outcomes: Sequence[tuple[str, Outcome]]
    ) -> list[bool]:
        if commands:  # the outcomes' own commits (with no accept to share) do not count
            commits.append([equipment_id for _, _, equipment_id in commands])
            release.wait(timeout=120)
        return commit(commands, outcomes)

    ledger.commit = held  # type: ignore[method-assign]
    burst = [execution_request(SLOW, "measurement", {"command": "get_voltage"}) for _ in range(100)]
    requests = [*burst, execution_request("multimeter_1", "measurement", {})]

    async def ask(request: ExecutionRequest) -> RunReply:
        command = RunCommand(request=request, due_at=datetime.now(UTC))
        subject = run_subject(request.spec.equipment_id)
        msg = await nc.request(subject, encoder.encode(command), timeout=60)
        return msgspec.json.decode(msg.data, type=RunReply)

    received = agent_nc.stats["in_msgs"]
    try:
        asking = [asyncio.ensure_future(ask(r)) for r in requests]
        await eventually(
            lambda: agent_nc.stats["in_msgs"] - received, until=lambda n: n >= len(requests)
        )
        await eventually(lambda: len(commits), until=lambda n: n >= 1)
        release.set()
        replies = await asyncio.gather(*asking)
        assert {r.status for r in replies} == {"accepted"}
        # One commit was under way when the burst came; the rest shared the next (or, had
        # the loop woken the writer before the last commands reached it, the one after).
        assert sum(len(c) for c in commits) == len(requests)
        assert len(commits) <= 3, [len(c) for c in commits]
        # The other instrument's command went with them, not after the whole burst.
        assert any("multimeter_1" in c for c in commits)
        await eventually(
            lambda: sum(q.depth for q, _ in agent.instrument_queues().values()),
            until=lambda n: n == 0,
        )
    finally:
        release.set()
        await agent.aclose()
        await nc.close()


@pytest.mark.nats
async def test_a_queue_change_is_announced_before_the_next_heartbeat_for_its_instrument_only(
    lab: AgentLab, tmp_path: Path, nats_server: NatsServer
) -> None:
    """Heartbeats ten minutes apart: whatever the scheduler learns of the queue after the
    first one came early, because the queue changed (on the agent's real clock)."""
    gate = Gate()
    config = bench_config(copy_bench(tmp_path / "bench"), tmp_path / "data", heartbeat_seconds=600)
    await lab.start_agent(config, wrap=gated(gate))
    heard: list[Presence] = []

    async def keep(msg: Any) -> None:
        heard.append(msgspec.json.decode(msg.data, type=Presence))

    nc = await nats.connect(nats_server.url)
    try:
        await nc.subscribe("lablink.reports.*.presence", cb=keep)
        await nc.flush()
        gate.close()
        job = {**MEASURE_SLOW, "enabled": False}
        runs = [await lab.engine.run_now(lab.create(job)) for _ in range(5)]
        backlog = await eventually(
            lambda: lab.executor.queue_depths().get(SLOW),
            until=lambda q: q == QueueDepth(queued=4, running=1),
        )
        assert backlog is not None
        assert backlog.depth == len(runs)
        gate.open()
        await eventually(
            lambda: lab.executor.queue_depths().get(SLOW), until=lambda q: q == QueueDepth()
        )
        await eventually(lambda: statuses(lab, runs), until=lambda s: s == {"completed": 5})
    finally:
        gate.open()
        await nc.close()
    # Only the instrument whose queue changed was announced again.
    assert heard
    assert {p.equipment_id for p in heard} == {SLOW}


def test_an_older_agents_presence_reads_as_its_whole_queue_running() -> None:
    """Before ``queued``, a presence named every accepted, unfinished execution in
    ``running``: it still decodes, with the same depth."""
    old = (
        b'{"equipment_id":"dmm","agent_id":"pc","kind":"multimeter","state":"online",'
        b'"running":["exec_1","exec_2","exec_3"]}'
    )
    presence = msgspec.json.decode(old, type=Presence)
    assert presence.queue == QueueDepth(queued=0, running=3)
    assert presence.queue.depth == 3
    new = Presence(
        equipment_id="dmm",
        agent_id="pc",
        kind="multimeter",
        state="online",
        running=("exec_1", "exec_2", "exec_3"),
        queued=2,
    )
    assert msgspec.json.decode(encoder.encode(new), type=Presence).queue == QueueDepth(2, 1)


# -- the in-process bench (LABLINK_NATS=off) ----------------------------------------------------


@pytest.fixture
async def held_bench(
    tmp_path: Path,
) -> AsyncIterator[tuple[InProcessExecutor, Gate, RecordingPort]]:
    gate = Gate()
    recorded: dict[str, RecordingPort] = {}
    bench = open_simulated_bench(copy_bench(tmp_path / "bench"), wrap=gated(gate, recorded))
    executor = InProcessExecutor(bench, tmp_path / "data")
    try:
        yield executor, gate, recorded[SLOW]
    finally:
        gate.open()
        await executor.aclose()


async def test_a_stopped_execution_is_made_safe_before_the_queue_and_a_waiting_one_touches_nothing(
    held_bench: tuple[InProcessExecutor, Gate, RecordingPort],
) -> None:
    executor, gate, port = held_bench
    gate.close()
    first = execution_request(SLOW, "state_capture")
    waiting = [execution_request(SLOW, "measurement", {"command": "get_voltage"}) for _ in range(3)]
    runs = {
        r.execution_id: asyncio.create_task(executor.execute(r, ProgressLog()))
        for r in (first, *waiting)
    }
    await asyncio.to_thread(gate.holding.wait, 60)  # the first is on the instrument
    await eventually(
        executor.queue_depths, until=lambda q: q[SLOW] == QueueDepth(queued=3, running=1)
    )
    assert all(q == QueueDepth() for eid, q in executor.queue_depths().items() if eid != SLOW)
    before = len(port.sent())

    # Stopped while it waits (the engine cancels, then asks to stop): nothing is sent.
    doomed = waiting[0].execution_id
    runs[doomed].cancel()
    with pytest.raises(asyncio.CancelledError):
        await runs[doomed]
    assert await executor.halt(doomed) == {}
    assert executor.queue_depths()[SLOW] == QueueDepth(queued=2, running=1)

    # Stopped on the instrument: its safe state comes right after it, before the others.
    runs[first.execution_id].cancel()
    with pytest.raises(asyncio.CancelledError):
        await runs[first.execution_id]
    stopping = asyncio.create_task(executor.halt(first.execution_id))
    # One turn of the loop: halt runs until it waits for the worker, its safe state queued.
    await asyncio.sleep(0)
    gate.open()
    assert await stopping == {"outputs": {"output": False}}
    outcomes = [await runs[r.execution_id] for r in waiting[1:]]
    assert [o.status for o in outcomes] == ["completed", "completed"]
    after = port.sent()[before:]
    assert after.count(SAFE_STATE_SCPI) == 1
    assert after.count(MEASURE_SCPI) == 2  # the stopped waiting one never measured
    assert after.index(SAFE_STATE_SCPI) < after.index(MEASURE_SCPI)
    assert executor.queue_depths()[SLOW] == QueueDepth()


async def test_a_timeout_on_a_backlogged_instrument_does_not_hold_up_the_engine(
    tmp_path: Path, clock: ManualClock, held_bench: tuple[InProcessExecutor, Gate, RecordingPort]
) -> None:
    """The engine's tick waits for the stops it makes. The safe state of an execution timed
    out while it waited for its instrument used to queue behind that instrument's backlog,
    and every instrument's next fire waited with it."""
    executor, gate, port = held_bench
    store = open_store(tmp_path / "scheduler.db")
    jobs = JobRepository(store)
    service = JobService(store, clock, default_timezone="UTC", repository=jobs)
    engine = Engine(store, clock, executor, jobs=jobs)
    await engine.open([], [])
    job = {"name": "t", "trigger_type": "interval", "interval_hours": 1, "enabled": False}
    try:
        gate.close()
        holding = service.create_job({**job, **MEASURE_SLOW, "timeout_seconds": 3600}, "t")
        behind = [
            service.create_job({**job, **MEASURE_SLOW, "timeout_seconds": 3600}, "t")
            for _ in range(3)
        ]
        short = service.create_job({**job, **MEASURE_SLOW, "timeout_seconds": 10}, "t")
        first = await engine.run_now(holding)
        await asyncio.to_thread(gate.holding.wait, 60)
        for job_id in behind:
            await engine.run_now(job_id)
        late = await engine.run_now(short)
        other = service.create_job(
            {
                **job,
                "schedule_type": "state_capture",
                "equipment_id": "load_1",
                "enabled": True,
                "interval_hours": None,
                "interval_seconds": 60,
                "start_date": (clock.now() + timedelta(seconds=30)).isoformat(),
            },
            "t",
        )
        await eventually(
            executor.queue_depths, until=lambda q: q[SLOW] == QueueDepth(queued=4, running=1)
        )
        sent = len(port.sent())

        # Past the short timeout and the other instrument's fire: one tick handles both.
        clock.advance(timedelta(seconds=31))
        async with asyncio.timeout(60):
            assert await engine.tick() == 2
        await eventually(
            lambda: view_rows(store.path, "SELECT * FROM executions WHERE job_id = ?", other),
            until=lambda rows: bool(rows) and rows[0]["status"] == "completed",
        )
        (timed_out,) = view_rows(
            store.path, "SELECT * FROM executions WHERE execution_id = ?", late
        )
        assert timed_out["status"] == "timed_out"
        assert port.sent()[sent:] == []  # nothing for the timed-out one reached the instrument
        assert executor.queue_depths()[SLOW] == QueueDepth(queued=3, running=1)
    finally:
        gate.open()
    await eventually(
        lambda: view_rows(store.path, "SELECT * FROM executions WHERE execution_id = ?", first),
        until=lambda rows: rows[0]["status"] == "completed",
    )
    await engine.aclose(grace_seconds=30)
    store.close()
    assert executor.queue_depths()[SLOW] == QueueDepth()


async def test_the_in_process_bench_shows_its_queues_in_health(
    tmp_path: Path, clock: ManualClock, held_bench: tuple[InProcessExecutor, Gate, RecordingPort]
) -> None:
    executor, gate, _ = held_bench
    store = open_store(tmp_path / "scheduler.db")
    jobs = JobRepository(store)
    service = JobService(store, clock, default_timezone="UTC", repository=jobs)
    engine = Engine(store, clock, executor, jobs=jobs)
    await engine.open([], [])
    context = api_context(tmp_path, clock, store, service, engine)
    job = {"name": "t", "trigger_type": "interval", "interval_hours": 1, "enabled": False}
    try:
        gate.close()
        for _ in range(3):
            await engine.run_now(service.create_job({**job, **MEASURE_SLOW}, "t"))
        await eventually(
            executor.queue_depths, until=lambda q: q[SLOW] == QueueDepth(queued=2, running=1)
        )
        (health,) = await api_get(context, "/health")
        assert health["agents"]["status"] == "in-process"
        queues = health["agents"]["queues"]
        assert queues[SLOW] == {"queued": 2, "running": 1}
        assert all(queues[eid] == {"queued": 0, "running": 0} for eid in OTHERS)
    finally:
        gate.open()
    await asyncio.wait_for(asyncio.gather(*engine.tasks().values()), 60)
    (health,) = await api_get(context, "/health")
    assert health["agents"]["queues"][SLOW] == {"queued": 0, "running": 0}
    context.close()
    await engine.aclose()
    store.close()
