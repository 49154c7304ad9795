"""`lablink profiles import DIR` and the profiles `lablink serve` ships: files in LabLink's
profile format, loaded into the log; bad files refused with their reasons, the rest loaded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lablink.clock import ManualClock
from lablink.eventstore.sqlite import SQLiteEventStore
from lablink.instruments.simulated import SIMULATED_BENCH
from lablink.logstore import open_store
from lablink.profile_import import import_profiles, run_import
from lablink.profile_service import SHIPPED_DIR, ProfileService, load_shipped_profiles
from lablink.projections.profiles import list_profiles, read_profile
from lablink.projections.reading import reading_views

GOOD: dict[str, Any] = {
    "name": "Bench 12 V",
    "description": "12 V for the fan tests",
    "equipment_type": "power_supply",
    "model": "PSU-3005",
    "settings": {"current": 2.0, "voltage": 12.0},
    "tags": ["fans"],
    # Bookkeeping a profile file may carry: the log keeps its own.
    "created_at": "2025-10-01T12:00:00",
    "modified_at": "2025-10-02T12:00:00",
}


def write(folder: Path, name: str, content: Any) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    text = content if isinstance(content, str) else json.dumps(content)
    (folder / name).write_text(text)


def profile_events(store: SQLiteEventStore) -> list[tuple[str, str, str]]:
    with reading_views(store) as views:
        rows = views.execute(
            "SELECT stream_id, type, actor FROM events WHERE stream_id LIKE 'profile:%'"
            " ORDER BY position"
        ).fetchall()
    return [(str(s), str(t), str(a)) for s, t, a in rows]


def test_a_folder_of_good_and_bad_files(
    tmp_path: Path, store: SQLiteEventStore, clock: ManualClock
) -> None:
    folder = tmp_path / "profiles"
    write(folder, "bench_12v.json", GOOD)
    write(
        folder,
        "scope.json",
        {
            **GOOD,
            "name": "scope",
            "equipment_type": "oscilloscope",
            "settings": {"sample_rate": 1e6},
            "profile_id": "scope_1m",
        },
    )
    write(folder, "too_hot.json", {**GOOD, "settings": {"voltage": 48.0, "current": 9}})
    write(folder, "broken.json", "{not json")
    write(folder, "list.json", [GOOD])
    write(folder, "extra.json", {**GOOD, "owner": "ann"})
    write(folder, "notes.txt", "not a profile")

    report = import_profiles(store, clock, folder)

    assert report.created == ["bench_12v (bench_12v.json)", "scope_1m (scope.json)"]
    refused = dict(report.refused)
    assert set(refused) == {"too_hot.json", "broken.json", "list.json", "extra.json"}
    assert refused["too_hot.json"] == [
        "settings.voltage=48.0: is above the maximum 30 V of the power_supply driver",
        "settings.current=9: is above the maximum 5 A of the power_supply driver",
    ]
    assert refused["broken.json"][0].startswith("file='broken.json': not readable JSON")
    assert refused["list.json"] == ["file='list.json': expected a JSON object"]
    assert refused["extra.json"] == ["owner='ann': unknown field"]
    assert report.exit_code == 1
    with reading_views(store) as views:
        profile = read_profile(views, "bench_12v")
    assert profile is not None
    assert profile["name"] == "Bench 12 V"
    assert profile["settings"] == {"current": 2.0, "voltage": 12.0}
    assert profile["created_by"] == "lablink profiles import"


def test_importing_again_updates_what_changed_and_leaves_the_rest(
    tmp_path: Path, store: SQLiteEventStore, clock: ManualClock
) -> None:
    folder = tmp_path / "profiles"
    write(folder, "bench_12v.json", GOOD)
    write(folder, "bench_5v.json", {**GOOD, "settings": {"voltage": 5.0}})
    assert import_profiles(store, clock, folder).exit_code == 0

    write(folder, "bench_5v.json", {**GOOD, "settings": {"voltage": 5.2}})
    report = import_profiles(store, clock, folder)

    assert report.updated == ["bench_5v (bench_5v.json)"]
    assert report.unchanged == ["bench_12v (bench_12v.json)"]
    assert report.exit_code == 0
    assert [t for _, t, _ in profile_events(store)] == [
        "profile.created",
        "profile.created",
        "profile.updated",
    ]


def test_two_files_naming_one_id_refuse_the_second(
    tmp_path: Path, store: SQLiteEventStore, clock: ManualClock
) -> None:
    folder = tmp_path / "profiles"
    write(folder, "a.json", {**GOOD, "profile_id": "same"})
    write(folder, "b.json", {**GOOD, "profile_id": "same", "settings": {"voltage": 1.0}})
    report = import_profiles(store, clock, folder)
    assert report.created == ["same (a.json)"]
    assert report.refused == [("b.json", ["profile_id='same': is also the id of a.json"])]


def test_the_command_prints_a_report_and_exits_non_zero_on_refusals(
    tmp_path: Path, clock: ManualClock
) -> None:
    folder = tmp_path / "profiles"
    write(folder, "bench_12v.json", GOOD)
    write(folder, "too_hot.json", {**GOOD, "settings": {"voltage": 48.0}})
    db = tmp_path / "data" / "scheduler.db"
    lines: list[str] = []

    assert run_import(folder, db, echo=lines.append, clock=clock) == 1
    assert lines == [
        "created   bench_12v (bench_12v.json)",
        "refused   too_hot.json",
        "          - settings.voltage=48.0: is above the maximum 30 V of the power_supply driver",
        "1 created, 0 updated, 0 unchanged, 1 refused",
    ]
    (folder / "too_hot.json").unlink()
    lines.clear()
    assert run_import(folder, db, echo=lines.append, clock=clock) == 0
    assert lines[-1] == "0 created, 0 updated, 1 unchanged, 0 refused"
    assert run_import(tmp_path / "missing", db, echo=lines.append, clock=clock) == 2
    assert lines[-1] == f"error: {tmp_path / 'missing'} is not a folder"


def test_the_shipped_profiles_load_once_and_cover_every_simulated_kind(
    db_path: Path, clock: ManualClock
) -> None:
    store = open_store(db_path)
    try:
        created = load_shipped_profiles(store, clock)
        assert {"high_resolution_profile", "high_res_1GS"} <= set(created)
        assert len(created) == len(list(SHIPPED_DIR.glob("*.json")))
        assert load_shipped_profiles(store, clock) == []  # idempotent
        events = profile_events(store)
        assert len(events) == len(created)
        assert {actor for _, _, actor in events} == {"lablink serve"}
        with reading_views(store) as views:
            profiles = list_profiles(views)
        kinds = {p["equipment_type"] for p in profiles}
        assert kinds == {kind for kind, _ in SIMULATED_BENCH.values()}
        for profile in profiles:
            assert profile["settings"], profile["profile_id"]
            assert profile["name"] == profile["profile_id"]
    finally:
        store.close()


def test_a_shipped_profile_an_admin_deleted_stays_deleted(
    db_path: Path, clock: ManualClock
) -> None:
    store = open_store(db_path)
    try:
        load_shipped_profiles(store, clock)
        ProfileService(store, clock).delete("high_res_1GS", "admin")
        assert load_shipped_profiles(store, clock) == []
        with reading_views(store) as views:
            assert read_profile(views, "high_res_1GS") is None
    finally:
        store.close()
