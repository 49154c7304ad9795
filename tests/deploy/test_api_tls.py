"""HTTPS for the API: LABLINK_TLS_CERT/KEY make `lablink serve` answer over TLS only (a real
server with a certificate made by the test), and one without the other stops it at start."""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import structlog
from typer.testing import CliRunner

from lablink.cli import app
from lablink.settings import Settings
from tests.deploy.certs import make_certs
from tests.support.serve import Server, free_port


def clear_lablink_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("LABLINK_")]:
        monkeypatch.delenv(name)


@pytest.fixture
def logging_restored() -> Iterator[None]:
    """`lablink serve` configures structlog to print to the sys.stdout of the moment, which
    under CliRunner is a buffer closed when invoke returns: left in place, every later log
    line in this process raises "I/O operation on closed file" (a relay logging its connect
    dies, and a later test waits in vain for its stream)."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.mark.parametrize(
    ("given", "missing"),
    [("LABLINK_TLS_CERT", "LABLINK_TLS_KEY"), ("LABLINK_TLS_KEY", "LABLINK_TLS_CERT")],
)
def test_one_without_the_other_is_refused_naming_both(
    given: str,
    missing: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    logging_restored: None,
) -> None:
    certs = make_certs(tmp_path / "tls")
    clear_lablink_env(monkeypatch)
    monkeypatch.setenv(given, str(certs.cert if given.endswith("CERT") else certs.key))
    with pytest.raises(ValueError, match=f"{given} is set but {missing} is not"):
        Settings.from_env()
    # `lablink serve` stops before opening anything: one line, exit 2.
    result = CliRunner().invoke(app, ["serve", "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 2, result.output
    assert missing in result.output
    assert not (tmp_path / "data").exists()


def test_a_missing_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    certs = make_certs(tmp_path / "tls")
    clear_lablink_env(monkeypatch)
    monkeypatch.setenv("LABLINK_TLS_CERT", str(certs.cert))
    monkeypatch.setenv("LABLINK_TLS_KEY", str(tmp_path / "nope.key"))
    with pytest.raises(ValueError, match=r"LABLINK_TLS_KEY '.*nope\.key': no such file"):
        Settings.from_env()
    monkeypatch.setenv("LABLINK_TLS_KEY", str(certs.key))
    settings = Settings.from_env()
    assert (settings.tls_cert, settings.tls_key) == (str(certs.cert), str(certs.key))


@pytest.mark.e2e
def test_serve_answers_https_with_a_secure_cookie_and_refuses_plain_http(
    tmp_path: Path, servers: list[Server]
) -> None:
    certs = make_certs(tmp_path / "tls")
    port = free_port()
    server = Server(
        tmp_path / "data",
        port,
        {
            "LABLINK_NATS": "off",  # the bus plays no part in HTTPS
            "LABLINK_TLS_CERT": str(certs.cert),
            "LABLINK_TLS_KEY": str(certs.key),
        },
    )
    servers.append(server)
    assert server.listening()["url"] == f"https://127.0.0.1:{port}"
    # The first start's admin key, and the dashboard's URL, printed with https.
    assert f"Sign in with it at https://127.0.0.1:{port}/ (the dashboard)," in "\n".join(
        server.printed()
    )
    key = (tmp_path / "data" / "admin.key").read_text().strip()
    trusted = ssl.create_default_context(cafile=str(certs.ca))
    base = f"https://127.0.0.1:{port}"
    with httpx.Client(base_url=base, verify=trusted, timeout=30) as client:
        health = client.get("/health")
        assert health.status_code == 200, health.text
        assert health.url.scheme == "https"
        # The dashboard's session cookie is Secure over TLS.
        form = client.get("/signin")
        assert form.status_code == 200, form.text
        token = re.search(r'name="_csrf_token" value="([^"]+)"', form.text)
        assert token is not None, form.text[:500]
        signed_in = client.post(
            "/signin", data={"key": key, "next": "/", "_csrf_token": token.group(1)}
        )
        assert signed_in.status_code == 303, signed_in.text
        cookie = signed_in.headers["set-cookie"]
        assert cookie.startswith("lablink_session=")
        assert "Secure" in [part.strip() for part in cookie.split(";")]
    # Plain HTTP on the same port gets no answer: the server expects a TLS handshake.
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=30)
    # Nor does a client that does not trust the certificate.
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{base}/health", timeout=30)
