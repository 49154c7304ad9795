"""Delivering one message: a signed HTTP POST (webhook) or a mail over SMTP (email).

A sender either returns (delivered) or raises ``DeliveryFailed`` naming why; the outbox
records either as an event and decides about retrying. A webhook's 2xx is delivered,
anything else (another status, a timeout, a refused connection) is not.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from email.message import EmailMessage
from typing import Protocol

import httpx

from lablink.errors import DeliveryFailed
from lablink.notify.config import Channel, Email, Webhook
from lablink.notify.message import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, Message, signature
from lablink.supervision import describe


class Sender(Protocol):
    async def send(self, message: Message) -> str:
        """Deliver ``message``; returns what the receiver said (for the record)."""
        ...

    async def aclose(self) -> None: ...


class WebhookSender:
    def __init__(self, channel: Channel, target: Webhook) -> None:
        self.channel = channel
        self.target = target
        # One client per channel: its connections are its own, so a slow receiver holds
        # only its own channel's worker.
        self._client = httpx.AsyncClient(timeout=channel.timeout, follow_redirects=False)

    async def send(self, message: Message) -> str:
        body = message.json_body()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature(self.target.secret, body),
            IDEMPOTENCY_HEADER: message.key,
            "User-Agent": "LabLink-notifier",
        }
        try:
            # The whole exchange is bounded, not only each read: a receiver that trickles
            # bytes must not hold the channel for ever.
            async with asyncio.timeout(self.channel.timeout):
                answer = await self._client.post(self.target.url, content=body, headers=headers)
        except (TimeoutError, httpx.TimeoutException):
            # Either bound may strike first (the client's per-read one at the same instant):
            # one reason for the record either way.
            raise DeliveryFailed(
                self.channel.name, f"no answer within {self.channel.timeout:g} s"
            ) from None
        except httpx.HTTPError as exc:
            raise DeliveryFailed(self.channel.name, describe(exc)) from exc
        if not 200 <= answer.status_code < 300:
            raise DeliveryFailed(
                self.channel.name, f"HTTP {answer.status_code}: {answer.text[:200]}"
            )
        return f"HTTP {answer.status_code}"

    async def aclose(self) -> None:
        await self._client.aclose()


class EmailSender:
    def __init__(self, channel: Channel, target: Email) -> None:
        self.channel = channel
        self.target = target

    async def send(self, message: Message) -> str:
        # smtplib blocks: in a thread, so the event loop (the engine's too) never waits.
        try:
            return await asyncio.to_thread(self._send, message)
        except (OSError, smtplib.SMTPException, ssl.SSLError) as exc:
            raise DeliveryFailed(self.channel.name, describe(exc)) from exc

    def _send(self, message: Message) -> str:
        target = self.target
        mail = EmailMessage()
        mail["From"] = target.sender
        mail["To"] = ", ".join(target.to)
        mail["Subject"] = message.subject()
        # Receivers that thread or dedupe by it see every attempt as the same message.
        mail["X-LabLink-Idempotency-Key"] = message.key
        mail.set_content(message.text())
        with smtplib.SMTP(target.host, target.port, timeout=self.channel.timeout) as smtp:
            smtp.ehlo()
            if target.starttls:
                context = ssl.create_default_context(
                    cafile=str(target.ca_file) if target.ca_file else None
                )
                smtp.starttls(context=context)
                smtp.ehlo()
            if target.username:
                smtp.login(target.username, target.password)
            refused = smtp.send_message(mail)
        if refused:
            raise smtplib.SMTPRecipientsRefused(refused)
        return f"accepted by {target.host}:{target.port}"

    async def aclose(self) -> None:
        """Nothing is kept open between mails."""


def sender_for(channel: Channel) -> Sender:
    if isinstance(channel.target, Webhook):
        return WebhookSender(channel, channel.target)
    return EmailSender(channel, channel.target)
