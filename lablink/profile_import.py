"""``lablink profiles import DIR``: load a folder of LabLink profile files into the log.

Each ``*.json`` file is one profile (``name``, ``description``, ``equipment_type``, ``model``,
``settings``, ``tags``; its id is ``profile_id`` when the file has one, else the file's name).
A new profile is created, a changed one updated, an identical one left alone; a file that
fails its checks is refused with every reason, and the others still load. The exit code is 1
when any file was refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lablink.clock import Clock, SystemClock
from lablink.errors import Conflict, InvalidRequest
from lablink.eventstore.base import EventStore
from lablink.logstore import open_store
from lablink.profile_service import ProfileService, profile_files, read_profile_file

IMPORT_ACTOR = "lablink profiles import"


@dataclass
class ImportReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    # (file name, reasons)
    refused: list[tuple[str, list[str]]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.refused else 0

    def lines(self) -> list[str]:
        out = [f"created   {p}" for p in self.created]
        out += [f"updated   {p}" for p in self.updated]
        out += [f"unchanged {p}" for p in self.unchanged]
        for name, reasons in self.refused:
            out.append(f"refused   {name}")
            out += [f"          - {reason}" for reason in reasons]
        out.append(
            f"{len(self.created)} created, {len(self.updated)} updated,"
            f" {len(self.unchanged)} unchanged, {len(self.refused)} refused"
        )
        return out


def import_profiles(
    store: EventStore,
    clock: Clock,
    directory: Path,
    *,
    actor: str = IMPORT_ACTOR,
    reason: str | None = None,
    require_reason: bool = False,
) -> ImportReport:
    """Every ``*.json`` of ``directory``, in name order; raises NotADirectoryError.

    ``reason`` is recorded with every profile the import changes. When one is required
    and none is given, a file that would change a profile is refused (naming ``reason``);
    new and unchanged ones still load."""
    if not directory.is_dir():
        raise NotADirectoryError(f"{directory} is not a folder")
    service = ProfileService(store, clock, require_reason=require_reason)
    report = ImportReport()
    seen: dict[str, str] = {}
    for path in profile_files(directory):
        try:
            profile_id, request = read_profile_file(path)
            if profile_id in seen:
                raise InvalidRequest.one(
                    "profile_id", profile_id, f"is also the id of {seen[profile_id]}"
                )
            outcome = service.save(profile_id, request, actor, reason)
        except InvalidRequest as exc:
            report.refused.append((path.name, [e.describe() for e in exc.errors]))
            continue
        except Conflict as exc:  # someone else saved it at the same moment, five times over
            report.refused.append((path.name, [str(exc)]))
            continue
        seen[profile_id] = path.name
        label = f"{profile_id} ({path.name})"
        bucket: list[str] = getattr(report, outcome)  # created, updated or unchanged
        bucket.append(label)
    return report


def run_import(
    directory: Path,
    db_path: Path,
    *,
    echo: Callable[[str], None] = print,
    clock: Clock | None = None,
    reason: str | None = None,
    require_reason: bool = False,
) -> int:
    """The command's body: import, print the report, return the exit code."""
    if not directory.is_dir():
        echo(f"error: {directory} is not a folder")
        return 2
    store = open_store(db_path)
    try:
        report = import_profiles(
            store,
            clock or SystemClock(),
            directory,
            reason=reason,
            require_reason=require_reason,
        )
    finally:
        store.close()
    if not report.created and not report.updated and not report.unchanged and not report.refused:
        echo(f"no *.json profile files in {directory}")
    for line in report.lines():
        echo(line)
    return report.exit_code
