"""Email channels against aiosmtpd on loopback: STARTTLS with a certificate made by the test,
then AUTH, then a plain-text mail with a link to the dashboard's alarms page."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import ipaddress
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lablink.clock import ManualClock
from lablink.events import NotificationFailed
from lablink.eventstore.sqlite import SQLiteEventStore
from lablink.notify.config import Channel, Email
from tests.notify.conftest import Start, facts, raise_alarm, sent
from tests.support.eventually import eventually
from tests.support.serve import free_port


def self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "smtp.pem", folder / "smtp.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


class Inbox:
    def __init__(self) -> None:
        self.mails: list[tuple[list[str], str]] = []
        self.logins: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.mails.append((list(envelope.rcpt_tos), envelope.content.decode()))
        return "250 OK"

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and auth_data.password == b"mail-secret"
        if ok:
            self.logins.append(auth_data.login)
        return AuthResult(success=ok, handled=False)


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[tuple[Inbox, int, Path]]:
    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    inbox = Inbox()
    port = free_port()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=port,
        tls_context=context,
        require_starttls=True,
        authenticator=inbox.authenticate,
        auth_require_tls=True,
    )
    controller.start()
    yield inbox, port, cert
    controller.stop()


def mail_channel(port: int, cert: Path, password: str = "mail-secret") -> Channel:
    return Channel(
        name="lab-mail",
        kind="email",
        target=Email(
            host="127.0.0.1",
            port=port,
            username="lablink",
            password=password,
            sender="lablink@lab.example",
            to=("oncall@lab.example",),
            ca_file=cert,
        ),
        dashboard_url="https://lablink.lab.example/",
        timeout=10,
    )


async def test_a_mail_goes_out_over_starttls_after_login(
    store: SQLiteEventStore, clock: ManualClock, start: Start, smtp: tuple[Inbox, int, Path]
) -> None:
    inbox, port, cert = smtp
    await start([mail_channel(port, cert)], clock)
    raise_alarm(store, "alarm_1")
    await eventually(lambda: sent(store))
    assert inbox.logins == [b"lablink"]
    ((to, raw),) = inbox.mails
    assert to == ["oncall@lab.example"]
    mail = email.message_from_string(raw, policy=email.policy.default)
    assert mail["Subject"] == "[LabLink] critical alarm raised: power_supply_1"
    assert mail.get_content_type() == "text/plain"
    text = mail.get_content()
    assert "Alarm alarm_1 was raised." in text
    assert "https://lablink.lab.example/alarms?equipment_id=power_supply_1" in text
    assert sent(store)[0].detail == f"accepted by 127.0.0.1:{port}"


async def test_a_refused_login_is_a_failed_attempt_naming_the_answer(
    store: SQLiteEventStore, clock: ManualClock, start: Start, smtp: tuple[Inbox, int, Path]
) -> None:
    inbox, port, cert = smtp
    await start([mail_channel(port, cert, password="wrong")], clock)
    raise_alarm(store, "alarm_1")
    await eventually(lambda: facts(store))
    (failed,) = facts(store)
    assert isinstance(failed, NotificationFailed)
    assert failed.attempt == 1
    assert "SMTPAuthenticationError" in failed.error
    assert inbox.mails == []
