"""A TCP proxy on 127.0.0.1 that passes client-to-server bytes at a bounded rate: a slow
link between an agent and its nats-server, so that a test can act while an upload is under
way (stop the server, kill the agent). Server-to-client bytes pass at once. When either end
closes, the other is closed too; a server that cannot be reached closes the client."""

from __future__ import annotations

import asyncio
import contextlib


class ThrottledProxy:
    def __init__(self, upstream_port: int, bytes_per_second: float) -> None:
        self.upstream_port = upstream_port
        self.rate = bytes_per_second
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> ThrottledProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        ends = (writer, up_writer)
        tasks = [
            asyncio.create_task(self._pipe(reader, up_writer, self.rate, ends)),
            asyncio.create_task(self._pipe(up_reader, writer, None, ends)),
        ]
        self._tasks.update(tasks)
        for task in tasks:
            task.add_done_callback(self._tasks.discard)

    async def _pipe(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        rate: float | None,
        ends: tuple[asyncio.StreamWriter, ...],
    ) -> None:
        try:
            while data := await source.read(16 * 1024):
                sink.write(data)
                await sink.drain()
                if rate is not None:
                    await asyncio.sleep(len(data) / rate)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for end in ends:
                end.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
