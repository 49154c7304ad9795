"""Moving up (issue 18, docs/cluster.md): a single node fires for a while and stops; its log
is imported with `lablink cluster import`; two replicas start on fresh data directories over
the 3-node cluster, and the leader fires on. The checker holds over the whole history: the
single node's fires, the downtime of the move recorded by each job's coalesce rule, and the
cluster's fires, none twice, every job acknowledged by the single node present."""

from __future__ import annotations

import os
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support.cluster_check import Acknowledged, check, due_margin, read_record
from tests.support.cluster_replicas import (
    create_interval_jobs,
    holder,
    replica,
    requested,
    trouble,
)
from tests.support.eventually import eventually_sync
from tests.support.nats_cluster import SCHEDULER
from tests.support.nats_thread import nats_cluster
from tests.support.serve import LABLINK, Server, free_port, servers  # noqa: F401 (a fixture)

JOBS = 5
# The move lasts at least this long: on a fast machine the import and the replicas' start take
# about a second, in which a job of 1 s has one fire due, which its coalesce rule runs late
# rather than records coalesced; the test is of a move whose downtime spans several fires.
DOWNTIME = timedelta(seconds=3)


@pytest.mark.nats
@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.cluster
@pytest.mark.timeout(300)
def test_a_single_nodes_log_moved_up_fires_on_in_the_cluster_with_every_fire_accounted(
    tmp_path: Path,
    servers: list[Server],  # noqa: F811
) -> None:
    acknowledged = Acknowledged()
    single_dir = tmp_path / "single"
    single = Server(
        single_dir,
        free_port(),
        {"LABLINK_NATS": "off", "LABLINK_EXECUTOR": "sim", "LABLINK_AUTH": "off"},
    )
    servers.append(single)
    single.listening()
    create_interval_jobs(single, JOBS, acknowledged, prefix="single")
    eventually_sync(lambda: len(requested(single_dir)), until=lambda n: n >= 3 * JOBS)
    single.terminate()
    assert single.proc.wait(timeout=60) == 0
    stopped = datetime.now(UTC)
    fired_alone = len(requested(single_dir))

    with nats_cluster(tmp_path / "nats") as (_, nodes):
        url = ",".join(node.url for node in nodes)
        env = {k: v for k, v in os.environ.items() if not k.startswith("LABLINK_")}
        env.update(
            LABLINK_NATS_URL=url,
            LABLINK_NATS_USER=SCHEDULER[0],
            LABLINK_NATS_PASSWORD=SCHEDULER[1],
            LABLINK_NATS_REPLICAS="3",
        )
        imported = subprocess.run(
            [LABLINK, "cluster", "import", "--data-dir", str(single_dir)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert imported.returncode == 0, imported.stdout + imported.stderr

        while datetime.now(UTC) < stopped + DOWNTIME:
            time.sleep(0.1)
        moved = datetime.now(UTC)
        replicas = {name: replica(tmp_path / name, name, url) for name in ("a", "b")}
        servers.extend(replicas.values())
        try:
            for server in replicas.values():
                server.listening()
            leader = holder(replicas)
            # The leader fires on: every job again, past what the single node had fired.
            eventually_sync(
                lambda: len(requested(tmp_path / leader)),
                until=lambda n: n >= fired_alone + 3 * JOBS,
            )
            create_interval_jobs(replicas[leader], 1, acknowledged, prefix="cluster")
            now = len(requested(tmp_path / leader))
            eventually_sync(
                lambda: len(requested(tmp_path / leader)),
                until=lambda n: n >= now + 2 * JOBS,
            )
            # The checker holds fires to a margin before the end: let it reach past the move.
            eventually_sync(
                lambda: due_margin(datetime.now(UTC)), until=lambda end: end > moved, timeout=60
            )
        except BaseException:
            for name, server in replicas.items():
                print(f"replica {name}:", *trouble(server), sep="\n  ")
            raise
        ended = due_margin(datetime.now(UTC))
        for server in replicas.values():
            server.terminate()
        for server in replicas.values():
            assert server.proc.wait(timeout=60) == 0
        record = read_record(url, *SCHEDULER)

    checked = check(record, {n: tmp_path / n for n in replicas}, acknowledged, ended)
    print(f"single node fired {fired_alone}; after the move: {checked}")
    assert checked.in_windows > 0, "the move's downtime was not recorded as coalesced"
