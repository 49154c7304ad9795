"""deploy/nats-server.conf as three nats-server processes on loopback (tests/bus/test_cluster.py,
tests/eventstore/test_jetstream.py): the nodes, made but not started."""

from __future__ import annotations

import socket
from pathlib import Path

from lablink.bus.server import NatsServer

CONFIG = Path(__file__).parents[2] / "deploy" / "nats-server.conf"
PASSWORDS = {
    "NATS_SCHEDULER_PASSWORD": "scheduler-secret",
    "NATS_AGENT_LAB_PC_1_PASSWORD": "agent-secret",
    "NATS_SUBSCRIBER_PASSWORD": "subscriber-secret",
    "NATS_SYS_PASSWORD": "sys-secret",
}
SCHEDULER = ("scheduler", PASSWORDS["NATS_SCHEDULER_PASSWORD"])


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def cluster_nodes(folder: Path) -> list[NatsServer]:
    """Three nodes of one cluster, each storing under ``folder/nats-<n>``."""
    ports = free_ports(6)
    client_ports, route_ports = ports[:3], ports[3:]
    routes = {
        f"NATS_ROUTE_{i + 1}": f"nats-route://127.0.0.1:{p}" for i, p in enumerate(route_ports)
    }
    nodes = []
    for i in range(3):
        env = {
            **PASSWORDS,
            **routes,
            "NATS_SERVER_NAME": f"nats-{i + 1}",
            "NATS_LISTEN": f"127.0.0.1:{client_ports[i]}",
            "NATS_CLUSTER_LISTEN": f"127.0.0.1:{route_ports[i]}",
            "NATS_STORE_DIR": str(folder / f"nats-{i + 1}"),
        }
        nodes.append(
            NatsServer(
                folder / f"nats-{i + 1}", port=client_ports[i], config=CONFIG.read_text(), env=env
            )
        )
    return nodes
