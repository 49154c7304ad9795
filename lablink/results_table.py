"""A job's results as the terminal shows them (``lablink results``): a rich table whose
columns follow what the points hold (value and unit, state fields, captured files)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.table import Table


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def results_table(job_id: str, points: Sequence[dict[str, Any]]) -> Table:
    kinds = {p["kind"] for p in points}
    fields: dict[str, str] = {}
    for point in points:
        for name, reading in (point.get("fields") or {}).items():
            fields.setdefault(name, reading.get("unit") or "")
    table = Table(title=f"results of {job_id}: {len(points)}")
    for column in ("scheduled", "started", "status"):
        table.add_column(column, no_wrap=True)
    if "measurement" in kinds:
        table.add_column("value", justify="right")
        table.add_column("unit")
    for name, unit in fields.items():
        table.add_column(f"{name} [{unit}]" if unit else name, justify="right")
    if "acquisition" in kinds:
        for column in ("object", "rows", "size", "data"):
            table.add_column(column)
    table.add_column("execution", no_wrap=True)
    for point in points:
        cells = [point["scheduled_time"], point["started_at"], point["status"]]
        if "measurement" in kinds:
            late = " (late)" if point.get("late") else ""
            value = point.get("value")
            cells += [_cell(value) + (late if value is not None else ""), point.get("unit")]
        readings = point.get("fields") or {}
        cells += [(readings.get(name) or {}).get("value") for name in fields]
        if "acquisition" in kinds:
            data = point.get("data") or {}
            cells += [data.get("object"), data.get("rows"), data.get("size"), data.get("status")]
        cells.append(point["execution_id"])
        table.add_row(*(_cell(c) for c in cells))
    return table
