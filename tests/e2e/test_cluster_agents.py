"""A paused leader's commands to a real agent are refused (issue 18), as processes: a 3-node
NATS cluster, two `lablink serve` replicas in cluster mode reaching their instruments through
agents (LABLINK_EXECUTOR=agents, their own embedded agents off), and one `lablink agent`
process (deploy/lab.toml's lab-pc-1, as its own NATS user) serving power_supply_1 and
multimeter_1 on the simulated bench. Interval jobs run through the agent.

The leader is SIGSTOPped past its lease's TTL: the other replica takes over and its commands,
carrying the new lease epoch, run on the agent, which keeps that epoch in its ledger. A run
command of the old epoch, sent as the scheduler's user for a fresh execution, is refused
naming the epochs and never run. SIGCONT: the old leader steps down and follows. Throughout,
a tap on the wire (the run subjects and the scheduler's inboxes) records each command's
epoch and the agent's reply: the agent never took a command of an epoch below one it had
taken before, and never took one execution twice. At the end the checker (``cluster_check``)
over the record: no scheduled time fired twice, every due fire accounted for, each copy the
record.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import httpx
import msgspec
import pytest

from lablink.instruments.protocol import RunCommand
from tests.support.bench import execution_request
from tests.support.cluster_agent import (
    RunTap,
    accepted_below_seen,
    highest_epoch,
    lab_agent,
    ledger_executions,
    logged,
    send_run,
)
from tests.support.cluster_check import Acknowledged, check, due_margin, read_record
from tests.support.cluster_replicas import (
    base,
    create_interval_jobs,
    holder,
    lease_of,
    replica,
    requested,
    role,
    trouble,
)
from tests.support.eventually import eventually_sync
from tests.support.nats_cluster import SCHEDULER
from tests.support.nats_thread import nats_cluster
from tests.support.serve import Server, servers  # noqa: F401 (a fixture)

JOBS = 3
PSU = "power_supply_1"
REFUSED = "run command from a former scheduler leader refused"


def completed(server: Server) -> set[str]:
    """The newest completed executions, as the replica's API shows them."""
    response = httpx.get(
        f"{base(server)}/api/scheduler/executions",
        params={"status": "completed", "limit": 1000},
        timeout=10,
    )
    response.raise_for_status()
    return {e["execution_id"] for e in response.json()["executions"]}


def taken(tap: RunTap, epoch: int) -> set[str]:
    """The executions the agent accepted from commands of ``epoch``."""
    return {e.execution_id for e in tap.exchanges() if e.epoch == epoch and e.status == "accepted"}


@pytest.mark.nats
@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.cluster
@pytest.mark.timeout(360)
def test_a_paused_leaders_commands_are_refused_by_a_real_agent(
    tmp_path: Path,
    servers: list[Server],  # noqa: F811
) -> None:
    acknowledged = Acknowledged()
    with nats_cluster(tmp_path / "nats") as (_, nodes):
        url = ",".join(node.url for node in nodes)
        tap = RunTap(url)
        agent = lab_agent(tmp_path / "agent", url)
        servers.append(agent)
        replicas: dict[str, Server] = {}
        try:
            agent.wait_for("agent started")
            for name in ("a", "b"):
                replicas[name] = replica(
                    tmp_path / name, name, url, LABLINK_EXECUTOR="agents", LABLINK_AGENTS="off"
                )
                servers.append(replicas[name])
            for server in replicas.values():
                server.listening()
            leader_name = holder(replicas)
            other_name = "b" if leader_name == "a" else "a"
            leader, other = replicas[leader_name], replicas[other_name]
            old_epoch = int(lease_of(leader)["epoch"])

            # Runs through the agent: completed in the API, each taken under the lease's epoch.
            jobs = create_interval_jobs(leader, JOBS, acknowledged)
            first = eventually_sync(
                lambda: completed(other) & taken(tap, old_epoch),
                until=lambda done: len(done) >= 2 * JOBS,
                timeout=120,
            )
            assert highest_epoch(tmp_path / "agent") == old_epoch

            os.kill(leader.proc.pid, signal.SIGSTOP)
            try:
                eventually_sync(lambda: role(other), until=lambda r: r == "holder", timeout=120)
                new_epoch = int(lease_of(other)["epoch"])
                assert new_epoch > old_epoch
                # The new leader's commands reach the agent and complete.
                eventually_sync(
                    lambda: (completed(other) & taken(tap, new_epoch)) - first,
                    until=lambda done: len(done) >= 2 * JOBS,
                    timeout=120,
                )
                # The agent has seen the new epoch while the old leader is still paused.
                assert highest_epoch(tmp_path / "agent") == new_epoch

                # What the old leader would send: a run command of its epoch, for a fresh
                # execution. The agent refuses it, naming both epochs, and never runs it.
                forged = RunCommand(
                    request=msgspec.structs.replace(
                        execution_request(PSU, "measurement", {"command": "get_voltage"}),
                        execution_id=f"exec_of_former_leader_{old_epoch}",
                    ),
                    due_at=datetime.now(UTC),
                    misfire_grace_time=300,
                    lease_epoch=old_epoch,
                )
                forged_id = forged.request.execution_id
                reply = send_run(url, forged)
                assert reply.status == "refused", reply
                assert reply.agent_id == "lab-pc-1"
                assert f"lease epoch {old_epoch}, below the {new_epoch} seen" in reply.reason
                (line,) = eventually_sync(
                    lambda: [x for x in logged(agent, REFUSED) if x["execution_id"] == forged_id]
                )
                assert (line["epoch"], line["highest"]) == (old_epoch, new_epoch)
                assert forged_id not in ledger_executions(tmp_path / "agent")
            finally:
                os.kill(leader.proc.pid, signal.SIGCONT)

            # Resumed, the old leader finds its lease gone (its fenced appends refused) and
            # follows; the new one fires on through the agent.
            leader.wait_for("lease lost: stepping down", timeout=60)
            eventually_sync(lambda: role(leader), until=lambda r: r == "follower", timeout=60)
            assert role(other) == "holder"
            now = completed(other) & taken(tap, new_epoch)
            eventually_sync(
                lambda: (completed(other) & taken(tap, new_epoch)) - now,
                until=lambda done: len(done) >= 2 * JOBS,
                timeout=120,
            )
            assert highest_epoch(tmp_path / "agent") == new_epoch
        except BaseException:
            for name, server in replicas.items():
                print(f"replica {name}:", *trouble(server), sep="\n  ")
            print("agent:", *trouble(agent), sep="\n  ")
            raise
        finally:
            tap.close()

        ended = due_margin(datetime.now(UTC))
        for server in replicas.values():
            server.terminate()
        for server in replicas.values():
            assert server.proc.wait(timeout=60) == 0
        agent.terminate()
        assert agent.proc.wait(timeout=60) == 0
        record = read_record(url, *SCHEDULER)
        checked = check(record, {n: tmp_path / n for n in replicas}, acknowledged, ended)
        print(checked)

    exchanges = tap.exchanges()
    by_epoch = Counter((e.epoch, e.status) for e in exchanges)
    refusals = [line for line in logged(agent, REFUSED) if line["execution_id"] != forged_id]
    print(f"run commands by (epoch, reply): {dict(by_epoch)}")
    print(f"the old leader's own commands refused after SIGCONT: {len(refusals)}")
    # Never a command below an epoch the agent had already taken, by the wire or by its log.
    assert not list(accepted_below_seen(exchanges))
    assert all(line["epoch"] == old_epoch for line in refusals), refusals
    assert by_epoch[(old_epoch, "accepted")] >= 2 * JOBS
    assert by_epoch[(new_epoch, "accepted")] >= 4 * JOBS
    # Every execution the agent took, taken once and finished in its ledger; the forged one
    # never in it.
    accepted = Counter(e.execution_id for e in exchanges if e.status == "accepted")
    assert [execution for execution, n in accepted.items() if n > 1] == []
    ledger = ledger_executions(tmp_path / "agent")
    assert set(accepted) <= set(ledger)
    assert forged_id not in ledger
    assert [execution for execution, status in ledger.items() if status is None] == []
    # No (job, scheduled time) fired twice, as the surviving leader's copy holds them.
    fires = requested(tmp_path / other_name)
    assert {job for job, _ in fires} == set(jobs)
    assert len(fires) == len(set(fires)), "a scheduled time was fired twice"
