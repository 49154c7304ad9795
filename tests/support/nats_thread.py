"""nats-servers for synchronous tests: ``NatsServer`` (asyncio) run on an event loop thread of
its own, so a sync test or fixture starts, kills and stops them with plain calls."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

from lablink.bus.server import NatsServer
from lablink.eventstore.loop_thread import LoopThread
from tests.support.nats_cluster import cluster_nodes

T = TypeVar("T")


class ServerThread:
    """Runs the servers' coroutines; ``call`` waits for one."""

    def __init__(self) -> None:
        self._loop = LoopThread("nats-servers")

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return self._loop.call(coro, timeout)

    def kill(self, server: NatsServer) -> None:
        """SIGKILL, as a crash."""
        self.call(server.kill())

    def stop(self, *servers: NatsServer) -> None:
        for server in servers:
            with contextlib.suppress(Exception):
                self.call(server.stop())
        self._loop.stop()


async def _start_all(nodes: list[NatsServer]) -> None:
    # Together: a node of a forming cluster may wait for its routes before it is ready.
    await asyncio.gather(*(node.start() for node in nodes))


@contextlib.contextmanager
def nats_server(store_dir: Path) -> Iterator[tuple[ServerThread, NatsServer]]:
    """A private nats-server (JetStream under ``store_dir``, sync_interval always)."""
    thread = ServerThread()
    server = NatsServer(store_dir)
    try:
        thread.call(server.start())
        yield thread, server
    finally:
        thread.stop(server)


@contextlib.contextmanager
def nats_cluster(folder: Path) -> Iterator[tuple[ServerThread, list[NatsServer]]]:
    """deploy/nats-server.conf as three nodes on loopback (``nats_cluster.cluster_nodes``)."""
    thread = ServerThread()
    nodes = cluster_nodes(folder)
    try:
        thread.call(_start_all(nodes))
        yield thread, nodes
    finally:
        thread.stop(*nodes)
