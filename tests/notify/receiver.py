"""A webhook receiver served by the test on 127.0.0.1: a minimal HTTP/1.1 server on
``asyncio.start_server``, in a thread of its own (so a sync test waiting on a `lablink serve`
child can use it too). It checks every request's signature, counts deliveries by their
Idempotency-Key, and can fail the first N requests or hold requests open until released."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Request:
    key: str
    signature_ok: bool
    body: dict[str, Any]
    status: int  # what the receiver answered (0: held, never answered)


@dataclass
class Receiver:
    secret: str
    fail_first: int = 0
    fail_status: int = 503
    hold: bool = False  # hold every request open (no answer) until release()
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._release: asyncio.Event | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._started.wait(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def main() -> None:
            self._release = asyncio.Event()
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]
            self._started.set()
            async with self._server:
                await self._server.serve_forever()

        with contextlib.suppress(asyncio.CancelledError):
            self._loop.run_until_complete(main())

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            expected = "sha256=" + hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
            with self._lock:
                seen = len(self.requests)
                status = self.fail_status if seen < self.fail_first else 200
                request = Request(
                    key=headers.get("idempotency-key", ""),
                    signature_ok=hmac.compare_digest(
                        expected, headers.get("x-lablink-signature", "")
                    ),
                    body=json.loads(body),
                    status=0 if self.hold else status,
                )
                self.requests.append(request)
            if self.hold:
                assert self._release is not None
                await self._release.wait()
                request.status = status
            reason = b"OK" if status == 200 else b"Unavailable"
            writer.write(
                b"HTTP/1.1 %d %s\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                % (status, reason)
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def release(self) -> None:
        """Answer held requests, and hold no more."""
        self.hold = False
        if self._release is not None:
            self._loop.call_soon_threadsafe(self._release.set)

    def delivered(self) -> list[Request]:
        """Requests answered 2xx."""
        with self._lock:
            return [r for r in self.requests if r.status == 200]

    def close(self) -> None:
        def stop() -> None:
            self._server.close()
            for task in asyncio.all_tasks(self._loop):
                task.cancel()

        self._loop.call_soon_threadsafe(stop)
        self._thread.join(10)
