"""deploy/README.md's certificates (step 2) made by running its openssl commands as they are
written, then used for real TLS handshakes on loopback under the names clients use: the API's
certificate as an HTTPS server for lablink.lab.example, a NATS node's as a server for its name
and, on the routes between nodes, as the client certificate the other node verifies. The
clients check as strictly as Python 3.13's default context does (VERIFY_X509_STRICT)."""

from __future__ import annotations

import re
import shutil
import socket
import ssl
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

README = Path(__file__).parents[2] / "deploy" / "README.md"
FOLDER = "/root/lablink-ca"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder the README's block fills: ca.crt, and <host>.crt/.key for each server."""
    (block,) = [
        b
        for b in re.findall(r"```bash\n(.*?)```", README.read_text(), re.DOTALL)
        if "openssl req -x509" in b
    ]
    assert FOLDER in block
    folder = tmp_path_factory.mktemp("lablink-ca")
    bash, openssl = shutil.which("bash"), shutil.which("openssl")
    assert bash is not None
    # Step 1 installs it; Debian's base image has it too.
    assert openssl is not None, "openssl: not found; install Debian's openssl package"
    run = subprocess.run(
        [bash, "-euo", "pipefail", "-c", block.replace(FOLDER, str(folder))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    return folder


def client_context(ca: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca / "ca.crt"))
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    return context


class Shake:
    """One TLS handshake on loopback: the certificate the client saw, and what each side
    raised (None when it shook hands)."""

    def __init__(self, server: ssl.SSLContext, client: ssl.SSLContext, name: str) -> None:
        self.seen: Any = None
        self.server_error: BaseException | None = None
        self.client_error: BaseException | None = None
        listener = socket.create_server(("127.0.0.1", 0))
        listener.settimeout(30)
        thread = threading.Thread(target=self._serve, args=(listener, server))
        thread.start()
        try:
            with (
                socket.create_connection(listener.getsockname(), timeout=30) as raw,
                client.wrap_socket(raw, server_hostname=name) as tls,
            ):
                self.seen = tls.getpeercert()
                tls.sendall(b".")
        except (ssl.SSLError, OSError) as exc:
            self.client_error = exc
        finally:
            thread.join(timeout=60)
            listener.close()

    def _serve(self, listener: socket.socket, server: ssl.SSLContext) -> None:
        try:
            connection, _ = listener.accept()
            with server.wrap_socket(connection, server_side=True) as tls:
                tls.recv(1)
        except (ssl.SSLError, OSError) as exc:
            self.server_error = exc

    def ok(self) -> bool:
        return self.server_error is None and self.client_error is None


def server_context(ca: Path, host: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(ca / f"{host}.crt", ca / f"{host}.key")
    return context


@pytest.mark.parametrize("host", ["lablink", "nats-1", "nats-2", "nats-3"])
def test_each_server_is_trusted_under_its_name(ca: Path, host: str) -> None:
    shake = Shake(server_context(ca, host), client_context(ca), f"{host}.lab.example")
    assert shake.ok(), (shake.client_error, shake.server_error)
    assert shake.seen["subjectAltName"] == (("DNS", f"{host}.lab.example"),)


def test_another_name_is_refused(ca: Path) -> None:
    shake = Shake(server_context(ca, "nats-1"), client_context(ca), "nats-2.lab.example")
    assert isinstance(shake.client_error, ssl.SSLCertVerificationError)
    assert "Hostname mismatch" in str(shake.client_error)


def test_a_node_presents_its_certificate_on_the_routes(ca: Path) -> None:
    # nats-node.conf's cluster tls has verify: true: the connecting node shows its own
    # certificate, which must be good for a client (extendedKeyUsage clientAuth).
    node = server_context(ca, "nats-1")
    node.verify_mode = ssl.CERT_REQUIRED
    node.load_verify_locations(ca / "ca.crt")
    node.verify_flags |= ssl.VERIFY_X509_STRICT
    peer = client_context(ca)
    peer.load_cert_chain(ca / "nats-2.crt", ca / "nats-2.key")
    shake = Shake(node, peer, "nats-1.lab.example")
    assert shake.ok(), (shake.client_error, shake.server_error)
    # A certificate of another CA is not let in (the client may or may not hear why).
    other = client_context(ca)
    key = ca / "stranger.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-new", "-nodes", "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:P-256", "-keyout", str(key), "-out", str(ca / "stranger.crt"),
         "-days", "2", "-subj", "/CN=stranger"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    other.load_cert_chain(ca / "stranger.crt", key)
    shake = Shake(node, other, "nats-1.lab.example")
    assert isinstance(shake.server_error, ssl.SSLCertVerificationError), shake.server_error
