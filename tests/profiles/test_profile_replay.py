"""Replay equals live for the profiles view: after any sequence of profile commands (valid or
refused), rebuilding from position 0 gives the same rows."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lablink.clock import ManualClock
from lablink.domain.profiles import parse_profile_request
from lablink.errors import LabLinkError
from lablink.eventstore.sqlite import connect
from lablink.logstore import open_store
from lablink.profile_service import ProfileService
from lablink.projections.runner import Projector

START = datetime(2026, 3, 27, 12, 0, tzinfo=UTC)
IDS = ["p0", "p1", "p2"]
BODIES: list[dict[str, Any]] = [
    {"name": "scope", "equipment_type": "oscilloscope", "settings": {"sample_rate": 1e6}},
    {"name": "psu", "equipment_type": "power_supply", "settings": {"voltage": 5.0}, "tags": ["a"]},
    {"name": "dmm", "equipment_type": "dmm", "settings": {"nplc": 1, "autorange": True}},
    {"name": "hot", "equipment_type": "power_supply", "settings": {"voltage": 99.0}},  # refused
]
CHANGES: list[dict[str, Any]] = [
    {"description": "edited"},
    {"settings": {"trigger_level": 1.0}},
    {"tags": ["x", "y"]},
    {"equipment_type": "load", "settings": {"current": 3}},
]

step = st.one_of(
    st.tuples(st.just("create"), st.sampled_from(IDS), st.integers(0, len(BODIES) - 1)),
    st.tuples(st.just("save"), st.sampled_from(IDS), st.integers(0, len(BODIES) - 1)),
    st.tuples(st.just("update"), st.sampled_from(IDS), st.integers(0, len(CHANGES) - 1)),
    st.tuples(st.just("delete"), st.sampled_from(IDS), st.just(0)),
)


def rows(conn: Any) -> list[tuple[Any, ...]]:
    return list(conn.execute("SELECT * FROM profiles ORDER BY profile_id"))


@pytest.mark.slow
@settings(
    max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(st.lists(step, min_size=1, max_size=25))
def test_rebuild_equals_live(steps: list[tuple[str, str, int]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        store = open_store(Path(folder) / "scheduler.db")
        clock = ManualClock(START)
        service = ProfileService(store, clock)
        for kind, profile_id, index in steps:
            clock.advance(timedelta(seconds=1))
            try:
                if kind == "create":
                    body = {**BODIES[index], "profile_id": profile_id}
                    service.create(parse_profile_request(body), "test")
                elif kind == "save":
                    service.save(profile_id, parse_profile_request(BODIES[index]), "test")
                elif kind == "update":
                    service.update(profile_id, CHANGES[index], "test")
                else:
                    service.delete(profile_id, "test")
            except LabLinkError:
                pass  # refused: nothing written, which the property covers too
        live = rows(store.views.conn)
        with store.views.write_lock:
            Projector().rebuild(store, store.views.conn)
        assert rows(store.views.conn) == live
        target = connect(Path(folder) / "copy.db")
        Projector().rebuild(store, target)
        assert rows(target) == live
        target.close()
        store.close()
