"""When checkpoints are signed (every N events, every T minutes when anything happened, at a
graceful stop) and what they hold; the signing key made once, private."""

from __future__ import annotations

import asyncio
import stat
from datetime import timedelta

from lablink.audit.checkpoints import Checkpointer
from lablink.audit.note import open_note
from lablink.audit.signing_key import ensure_signer, folder, load_signer
from lablink.clock import SystemClock
from lablink.events import CheckpointSigned
from tests.audit.conftest import Lab
from tests.support.eventually import eventually


def checkpoints_in(lab: Lab) -> list[CheckpointSigned]:
    return [
        r.event for r in lab.store.read_stream("audit") if isinstance(r.event, CheckpointSigned)
    ]


def test_the_key_is_made_once_private_and_kept(lab: Lab) -> None:
    where = folder(lab.data_dir)
    assert stat.S_IMODE(where.stat().st_mode) == 0o700
    for name in ("checkpoint.key", "origin"):
        assert stat.S_IMODE((where / name).stat().st_mode) == 0o600
    again = ensure_signer(lab.data_dir)
    assert again.verifier == lab.signer.verifier == load_signer(lab.data_dir).verifier
    assert lab.signer.name.startswith("lablink/")


def test_a_checkpoint_is_due_after_n_events_or_t_minutes_with_news(lab: Lab) -> None:
    checkpoints = lab.checkpoints
    now = lab.clock.now
    assert not checkpoints.due(now())  # an empty log
    lab.work(2)  # 6 events
    assert checkpoints.due(now())  # never signed: the first is due at once
    first = checkpoints.checkpoint(now())
    assert first is not None
    assert first.size == 6
    assert not checkpoints.due(now())  # only the checkpoint's own event since
    lab.clock.advance(timedelta(hours=1))
    assert not checkpoints.due(now())  # idle: no checkpoint after checkpoint
    lab.work(1)
    assert checkpoints.due(now())  # news, and T has passed since the last
    second = checkpoints.checkpoint(now())
    assert second is not None
    assert second.size == 10
    lab.work(3)  # 9 events since the checkpoint's own, within T
    assert not checkpoints.due(now())
    lab.work(1)  # 12 since it
    assert checkpoints.due(now())
    third = checkpoints.checkpoint(now())
    assert third is not None
    assert third.size == 23
    assert checkpoints_in(lab) == [first, second, third]


def test_a_checkpoint_signs_the_chain_head_at_its_size(lab: Lab) -> None:
    lab.work(2)
    size, head = lab.store.head()
    event = lab.checkpoints.checkpoint(lab.clock.now())
    assert event is not None
    opened = open_note(event.note, lab.signer.verifier)
    assert (opened.origin, opened.size, opened.head) == (lab.signer.name, size, head)
    assert event.head == head.hex()


def test_a_restart_knows_the_last_checkpoint(lab: Lab) -> None:
    lab.work(1)
    lab.checkpoints.checkpoint(lab.clock.now())
    again = Checkpointer(lab.store, lab.clock, lab.signer, every_events=10)
    assert not again.due(lab.clock.now())
    assert again.checkpoint(lab.clock.now()) is None


async def test_closing_signs_the_log_as_it_stands(lab: Lab) -> None:
    await lab.checkpoints.start()
    lab.work(1)
    await lab.checkpoints.aclose()
    (last,) = checkpoints_in(lab)
    assert last.size == 3


async def test_the_loop_signs_on_the_real_clock(lab: Lab) -> None:
    checkpoints = Checkpointer(
        lab.store, SystemClock(), lab.signer, every_events=5, poll_seconds=0.02
    )
    await checkpoints.start()
    try:
        lab.work(2)
        await eventually(lambda: [c.size for c in checkpoints_in(lab)] == [6])
        await asyncio.sleep(0.1)  # turns with nothing new sign nothing
        assert [c.size for c in checkpoints_in(lab)] == [6]
        assert checkpoints.iterations > 1
    finally:
        await checkpoints.aclose()
