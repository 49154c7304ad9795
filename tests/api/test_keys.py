"""API keys can be listed and revoked (API and CLI), a revocation holds for the very next
request, and wrong keys are logged (never whole) and throttled per client address."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs
from typer.testing import CliRunner

from lablink.api.app import create_app
from lablink.api.context import ApiContext
from lablink.cli import app as cli
from lablink.keys import create_key
from lablink.projections.reading import reading_views
from lablink.settings import Settings
from tests.support.harness import Harness


@contextlib.asynccontextmanager
async def keyed_api(harness: Harness, **overrides: Any) -> AsyncIterator[ApiContext]:
    """The real app with API keys on, over the harness's store and manual clock."""
    settings = Settings(
        data_dir=harness.path.parent,
        timezone=harness.tz,
        auth=True,
        allowed_hosts=("testserver",),
        **overrides,
    )
    context = ApiContext(
        settings=settings,
        clock=harness.clock,
        store=harness.store,
        service=harness.service,
        engine=harness.engine,
        auth_enabled=True,
    )
    try:
        yield context
    finally:
        context.close()


def client_from(app: Any, address: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def make_key(harness: Harness, name: str, role: str) -> tuple[str, str]:
    return create_key(harness.store, name=name, role=role, actor="test", now=harness.clock.now())


async def test_admin_lists_keys_without_their_secrets(harness: Harness) -> None:
    admin_id, admin = make_key(harness, "root", "admin")
    alice_id, alice = make_key(harness, "alice", "operator")
    async with keyed_api(harness) as context, client_from(create_app(context)) as client:
        listed = await client.get("/api/keys", headers=bearer(admin))
        assert listed.status_code == 200, listed.text
        body = listed.json()
        one = await client.get(f"/api/keys/{alice_id}", headers=bearer(admin))
        refused = await client.get("/api/keys", headers=bearer(alice))
        refused_delete = await client.delete(f"/api/keys/{admin_id}", headers=bearer(alice))
        missing = await client.get("/api/keys/nosuchkey", headers=bearer(admin))

    assert body["count"] == 2
    by_id = {k["key_id"]: k for k in body["keys"]}
    assert by_id[alice_id]["name"] == "alice"
    assert by_id[alice_id]["role"] == "operator"
    assert by_id[alice_id]["prefix"] == alice[:8]
    assert by_id[alice_id]["revoked"] is False
    assert by_id[alice_id]["created_by"] == "test"
    # The admin key was just used; alice's has not been.
    assert by_id[admin_id]["last_used_at"] is not None
    assert by_id[alice_id]["last_used_at"] is None
    for secret in (admin, alice):
        assert secret not in listed.text
        assert secret not in one.text
    assert "key_hash" not in by_id[alice_id]
    assert one.json()["key"]["key_id"] == alice_id
    assert refused.status_code == 403
    assert "'admin'" in refused.json()["detail"]
    assert refused_delete.status_code == 403
    assert missing.status_code == 404
    assert "nosuchkey" in missing.json()["detail"]


async def test_revocation_holds_for_the_next_request_and_is_an_event(harness: Harness) -> None:
    _, admin = make_key(harness, "root", "admin")
    bob_id, bob = make_key(harness, "bob", "operator")
    async with keyed_api(harness) as context, client_from(create_app(context)) as client:
        assert (await client.get("/api/scheduler/jobs", headers=bearer(bob))).status_code == 200
        revoked = await client.delete(f"/api/keys/{bob_id}", headers=bearer(admin))
        after = await client.get("/api/scheduler/jobs", headers=bearer(bob))
        again = await client.delete(f"/api/keys/{bob_id}", headers=bearer(admin))
        unknown = await client.delete("/api/keys/0123456789ab", headers=bearer(admin))

    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["key"]["revoked"] is True
    assert revoked.json()["key"]["revoked_by"] == "root"
    assert after.status_code == 401
    assert bob_id in after.json()["detail"]
    assert again.status_code == 409
    assert "already revoked" in again.json()["detail"]
    assert "root" in again.json()["detail"]
    assert again.json()["errors"][0]["value"] == bob_id
    assert unknown.status_code == 404
    assert "0123456789ab" in unknown.json()["detail"]
    conn = sqlite3.connect(harness.path)
    try:
        events = conn.execute(
            "SELECT type, actor FROM events WHERE stream_id = ? ORDER BY version",
            (f"apikey:{bob_id}",),
        ).fetchall()
    finally:
        conn.close()
    assert events == [("apikey.created", "test"), ("apikey.revoked", "root")]


async def test_an_admin_may_revoke_its_own_key(harness: Harness) -> None:
    admin_id, admin = make_key(harness, "root", "admin")
    async with keyed_api(harness) as context, client_from(create_app(context)) as client:
        assert (await client.delete(f"/api/keys/{admin_id}", headers=bearer(admin))).is_success
        assert (await client.get("/api/keys", headers=bearer(admin))).status_code == 401


async def test_cli_lists_and_revokes_while_the_api_runs(harness: Harness) -> None:
    carol_id, carol = make_key(harness, "carol", "viewer")
    data_dir = str(harness.path.parent)
    runner = CliRunner()
    async with keyed_api(harness) as context, client_from(create_app(context)) as client:
        assert (await client.get("/api/scheduler/jobs", headers=bearer(carol))).is_success
        listed = runner.invoke(cli, ["keys", "list", "--data-dir", data_dir])
        revoked = runner.invoke(
            cli, ["keys", "revoke", carol_id, "--by", "dave", "--data-dir", data_dir]
        )
        # Another process wrote the revocation: the API's next lookup sees it.
        after = await client.get("/api/scheduler/jobs", headers=bearer(carol))
        again = runner.invoke(cli, ["keys", "revoke", carol_id, "--data-dir", data_dir])
        unknown = runner.invoke(cli, ["keys", "revoke", "nosuchkey", "--data-dir", data_dir])
        relisted = runner.invoke(cli, ["keys", "list", "--data-dir", data_dir])

    assert listed.exit_code == 0, listed.output
    assert carol_id in listed.stdout
    assert "carol" in listed.stdout
    assert carol[:8] in listed.stdout
    assert carol not in listed.stdout
    assert revoked.exit_code == 0, revoked.output
    assert f"key {carol_id} revoked by dave" in revoked.stdout
    assert after.status_code == 401
    assert again.exit_code == 1
    assert "already revoked" in again.output
    assert "dave" in again.output
    assert unknown.exit_code == 1
    assert "'nosuchkey' not found" in unknown.output
    assert relisted.exit_code == 0
    assert "by dave" in relisted.stdout


def test_cli_refuses_a_missing_database(tmp_path: Any) -> None:
    result = CliRunner().invoke(cli, ["keys", "list", "--data-dir", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    assert "no database at" in result.output
    assert not (tmp_path / "nowhere").exists()


async def test_wrong_keys_are_logged_without_the_key_and_throttled(harness: Harness) -> None:
    revoked_id, revoked = make_key(harness, "old", "viewer")
    _, good = make_key(harness, "good", "viewer")
    _, admin = make_key(harness, "root", "admin")
    guess = "llk_" + "x" * 43
    async with (
        keyed_api(harness, auth_max_failures=3, auth_failure_window=60) as context,
    ):
        app = create_app(context)
        async with client_from(app) as client, client_from(app, "10.0.0.7") as neighbour:
            assert (
                await client.delete(f"/api/keys/{revoked_id}", headers=bearer(admin))
            ).is_success
            # Good keys are never counted, however many.
            for _ in range(20):
                assert (await client.get("/api/scheduler/jobs", headers=bearer(good))).is_success
            with capture_logs() as logs:
                first = await client.get("/api/scheduler/jobs", headers=bearer(guess))
                second = await client.get("/api/scheduler/jobs", headers={"X-API-Key": revoked})
                third = await client.get("/api/scheduler/jobs", headers=bearer(guess + "y"))
                # Now this address may not try any key, not even the good one.
                blocked = await client.get("/api/scheduler/jobs", headers=bearer(good))
                # No key at all is a plain 401, not a guess, and /health needs none.
                health = await client.get("/health")
                other = await neighbour.get("/api/scheduler/jobs", headers=bearer(good))
            harness.clock.advance(timedelta(seconds=59))
            still = await client.get("/api/scheduler/jobs", headers=bearer(good))
            harness.clock.advance(timedelta(seconds=2))
            later = await client.get("/api/scheduler/jobs", headers=bearer(good))

    assert [first.status_code, second.status_code, third.status_code] == [401, 401, 401]
    assert blocked.status_code == 429
    assert blocked.headers["Retry-After"] == "60"
    assert "127.0.0.1" in blocked.json()["detail"]
    assert health.status_code in (200, 503)
    assert other.status_code == 200
    assert still.status_code == 429
    assert int(still.headers["Retry-After"]) == 1
    assert later.status_code == 200

    failed = [entry for entry in logs if entry["event"] == "authentication failed"]
    assert [e["reason"] for e in failed] == ["unknown key", "revoked key", "unknown key"]
    assert failed[1]["key_id"] == revoked_id
    assert failed[0]["key_prefix"] == "llk_xxxx…"
    assert all(e["client"] == "127.0.0.1" for e in failed)
    assert [e["failures"] for e in failed] == [1, 2, 3]
    assert any(entry["event"] == "authentication throttled" for entry in logs)
    text = repr(logs)
    for secret in (guess, revoked, good):
        assert secret not in text


@pytest.mark.parametrize("sent", ["hunter2", "llk_short"])
async def test_short_guesses_are_not_logged_whole(harness: Harness, sent: str) -> None:
    async with keyed_api(harness) as context, client_from(create_app(context)) as client:
        with capture_logs() as logs:
            assert (
                await client.get("/api/scheduler/jobs", headers=bearer(sent))
            ).status_code == 401
    (entry,) = [e for e in logs if e["event"] == "authentication failed"]
    assert sent not in entry["key_prefix"]
    assert len(entry["key_prefix"].rstrip("…")) <= len(sent) // 4


def test_revoking_every_key_does_not_make_a_new_admin_key(tmp_path: Any) -> None:
    import asyncio

    from lablink.clock import SystemClock
    from lablink.keys import revoke_key
    from lablink.runtime import Runtime, ensure_admin_key

    async def starts() -> tuple[str | None, str | None]:
        settings = Settings(data_dir=tmp_path, timezone="UTC", executor="noop", nats=False)
        async with Runtime(settings) as runtime:
            created = ensure_admin_key(runtime)
            with reading_views(runtime.store) as views:
                (row,) = views.execute("SELECT key_id FROM api_keys").fetchall()
            revoke_key(runtime.store, row[0], actor="test", now=SystemClock().now())
            again = ensure_admin_key(runtime)
        return created, again

    created, again = asyncio.run(starts())
    assert created is not None
    assert again is None
