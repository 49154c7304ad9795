"""A LabLink server seen from the command line: requests with the user's API key.

The standard library's HTTP client: the commands that read from a server (``lablink
results``) stream what it sends to a file or the terminal, and those that change something
(``lablink equipment calibrate``) send a JSON body; they need nothing more.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from typing import Any

from lablink.errors import ServerRefused

CHUNK = 64 * 1024
TIMEOUT_SECONDS = 60.0


class Remote:
    def __init__(self, url: str, key: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.key = key

    def _open(
        self,
        path: str,
        params: Mapping[str, Any],
        *,
        method: str = "GET",
        body: Mapping[str, Any] | None = None,
    ) -> Any:
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        url = f"{self.url}{path}" + (f"?{query}" if query else "")
        headers = {"Accept": "application/json, text/csv"}
        if self.key:
            headers["X-API-Key"] = self.key
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            return urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS)
        except urllib.error.HTTPError as exc:
            raise ServerRefused(url, exc.code, _detail(exc)) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ServerRefused(url, 0, f"cannot reach the server ({reason})") from None

    def get_json(self, path: str, **params: Any) -> Any:
        with self._open(path, params) as answer:
            return json.load(answer)

    def send_json(self, method: str, path: str, body: Mapping[str, Any]) -> Any:
        """``body`` sent as JSON (POST, PUT); the answer's JSON."""
        with self._open(path, {}, method=method, body=body) as answer:
            return json.load(answer)

    def download(self, path: str, **params: Any) -> Any:
        """The open answer (``.headers``, ``.read(n)``), for a download that needs its
        headers (``lablink data get``: ETag, Content-Length); the caller closes it."""
        return self._open(path, params)

    def stream(self, path: str, **params: Any) -> Iterator[bytes]:
        """The answer's body, as it arrives."""
        with self._open(path, params) as answer:
            while chunk := answer.read(CHUNK):
                yield chunk


def _detail(exc: urllib.error.HTTPError) -> str:
    """The error envelope's ``detail`` (the API's 4xx and 5xx bodies carry one)."""
    try:
        body = json.loads(exc.read() or b"{}")
    except (ValueError, OSError):
        return str(exc.reason)
    detail = body.get("detail") if isinstance(body, dict) else None
    return str(detail) if detail else str(exc.reason)
