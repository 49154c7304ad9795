"""Acquisitions: samples from an instrument streamed to a CSV file, bounded in memory and disk.

A digitiser (``InstrumentModel.capture``) is read in records of its record length: arm, wait
for completion, one record per channel, append the rows, forget them. Any other instrument is
sampled point by point through its primary measurement. Either way at most
``max_samples_per_channel`` samples per channel are stored: a longer capture is decimated by
asking the instrument for a rate ``decimation`` times lower (what a scope does when a long
time window does not fit its memory), and the result says so; ``"decimate": false`` keeps the
requested rate, however many samples that makes. Only one record is ever held in memory, and
the file is written as ``<id>.csv.partial`` and renamed when complete, so a ``.csv`` in the
acquisitions folder is always a whole capture.

Before the instrument is armed the bytes the file will take are estimated (a bound per row)
and the capture is refused (``CaptureRefused``) when they exceed the maximum size of one
capture, or are not free in the folder beside the space the agent keeps free. The file's
header block is its provenance (docs/data.md, "Provenance"): who, what, when and how.

On the simulated bench records arrive at once: instrument time is not waited for in real time.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import structlog

from lablink import __version__
from lablink.instruments.checks import (
    FORMATS,
    MAX_DURATION_S,
    POINT_RATE_LIMITS,
    channels_of,
    decimate_of,
)
from lablink.instruments.context import Job, RunContext
from lablink.instruments.errors import (
    CaptureRefused,
    CommunicationError,
    EquipmentError,
    InvalidParameter,
)
from lablink.instruments.instrument import Instrument
from lablink.instruments.scpi import WaveformCapture, check_number

log = structlog.get_logger(tag="equipment")

DEFAULT_MAX_SAMPLES_PER_CHANNEL = 100_000
# Left free in the agent's data folder after a capture (lab.toml agent.keep_free_bytes).
DEFAULT_KEEP_FREE_BYTES = 256 * 1024**2
# The largest file one capture may write (lab.toml agent.max_capture_bytes).
DEFAULT_MAX_CAPTURE_BYTES = 8 * 1024**3
# A bound on the bytes of one CSV row: the time (%.9g, at most 15 characters) and each
# value (%.6g, at most 12), their commas and the newline. Header lines add _HEADER_BOUND.
_TIME_BYTES = 16
_VALUE_BYTES = 13
_HEADER_BOUND = 8192
_SAFE_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}$")
_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9_.-]+")
# ``ended_at`` is known only when the capture ends: the header keeps room for it.
_ENDED_AT = "ended_at"
_INSTANT_WIDTH = len(datetime(2000, 1, 1, tzinfo=UTC).isoformat(timespec="microseconds"))


@dataclass(frozen=True)
class CaptureLimits:
    keep_free_bytes: int = DEFAULT_KEEP_FREE_BYTES
    max_capture_bytes: int = DEFAULT_MAX_CAPTURE_BYTES


@dataclass(frozen=True)
class CapturePlan:
    duration: float
    sample_rate: float
    channels: tuple[int, ...]
    samples_requested: int  # per channel, at the requested rate
    decimation: int
    samples_stored: int  # per channel
    record_length: int  # samples per channel per read (1 when sampling point by point)

    @property
    def stored_rate(self) -> float:
        return self.sample_rate / self.decimation

    @property
    def records(self) -> int:
        return math.ceil(self.samples_stored / self.record_length)


def plan_capture(
    duration: float,
    sample_rate: float,
    channels: Sequence[int],
    record_length: int,
    max_samples_per_channel: int,
    *,
    decimate: bool = True,
) -> CapturePlan:
    requested = max(1, round(duration * sample_rate))
    decimation = max(1, math.ceil(requested / max_samples_per_channel)) if decimate else 1
    return CapturePlan(
        duration=duration,
        sample_rate=sample_rate,
        channels=tuple(channels),
        samples_requested=requested,
        decimation=decimation,
        samples_stored=math.ceil(requested / decimation),
        record_length=max(1, record_length),
    )


def estimated_bytes(plan: CapturePlan) -> int:
    """An upper bound on the size of the capture's file."""
    return _HEADER_BOUND + plan.samples_stored * (_TIME_BYTES + _VALUE_BYTES * len(plan.channels))


def check_space(equipment_id: str, need: int, folder: Path, limits: CaptureLimits) -> None:
    """Refuse a capture whose file would exceed the maximum, or not leave the space the
    agent keeps free in ``folder``."""
    if need > limits.max_capture_bytes:
        raise CaptureRefused(
            equipment_id,
            f"capture refused on {equipment_id}: it needs up to {need:,} bytes, more than the "
            f"maximum size of one capture, {limits.max_capture_bytes:,} bytes "
            "(agent.max_capture_bytes); shorten it, lower the rate or keep decimation on",
            details={"need_bytes": need, "limit_bytes": limits.max_capture_bytes},
        )
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if need + limits.keep_free_bytes > free:
        raise CaptureRefused(
            equipment_id,
            f"capture refused on {equipment_id}: it needs up to {need:,} bytes and "
            f"{limits.keep_free_bytes:,} must stay free (agent.keep_free_bytes), but only "
            f"{free:,} bytes are free in {folder}",
            details={
                "need_bytes": need,
                "free_bytes": free,
                "keep_free_bytes": limits.keep_free_bytes,
                "folder": str(folder),
            },
        )


class CsvSink:
    """Rows of ``time_s, <column>...`` after ``# key: value`` header lines, with running
    min/max/mean per column so nothing but the current record is kept. An ``ended_at``
    header line is written blank and filled in when the capture completes."""

    def __init__(
        self, path: Path, header: Sequence[tuple[str, Any]], columns: Sequence[str]
    ) -> None:
        self.path = path
        self.partial = path.with_name(path.name + ".partial")
        self.columns = tuple(columns)
        self._header = header
        self._min = [math.inf] * len(columns)
        self._max = [-math.inf] * len(columns)
        self._sum = [0.0] * len(columns)
        self.rows = 0
        self.ended_at: datetime | None = None
        self._ended_offset: int | None = None

    def __enter__(self) -> CsvSink:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._raw = self.partial.open("wb")
        for key, value in self._header:
            line = f"# {key}: "
            if key == _ENDED_AT:
                self._ended_offset = self._raw.tell() + len(line.encode())
                value = " " * _INSTANT_WIDTH
            self._raw.write(f"{line}{value}\n".encode())
        self._file = io.TextIOWrapper(self._raw, encoding="utf-8", newline="")
        self._writer = csv.writer(self._file)
        self._writer.writerow(("time_s", *self.columns))
        return self

    def write(self, start: int, rate: float, columns: Sequence[Sequence[float]]) -> None:
        for i, column in enumerate(columns):
            self._min[i] = min(self._min[i], *column)
            self._max[i] = max(self._max[i], *column)
            self._sum[i] += math.fsum(column)
        self._writer.writerows(
            (f"{(start + k) / rate:.9g}", *(f"{v:.6g}" for v in row))
            for k, row in enumerate(zip(*columns, strict=True))
        )
        self.rows += len(columns[0])

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._file.flush()
        self.ended_at = datetime.now(UTC)
        if self._ended_offset is not None and exc_type is None:
            self._raw.seek(self._ended_offset)
            self._raw.write(self.ended_at.isoformat(timespec="microseconds").encode())
        self._file.close()
        if exc_type is None:
            self.partial.replace(self.path)

    def statistics(self) -> dict[str, dict[str, float]]:
        return {
            name: {
                "min": self._min[i],
                "max": self._max[i],
                "mean": self._sum[i] / self.rows if self.rows else math.nan,
            }
            for i, name in enumerate(self.columns)
        }


def acquire(
    inst: Instrument,
    job: Job,
    ctx: RunContext,
    *,
    data_dir: Path,
    max_samples_per_channel: int = DEFAULT_MAX_SAMPLES_PER_CHANNEL,
    profile: Mapping[str, Any] | None = None,
    limits: CaptureLimits | None = None,
    agent_id: str = "",
    resource: str = "",
) -> dict[str, Any]:
    params = job.parameters
    eid = inst.equipment_id
    inst.expect_only(
        "acquisition", params, "duration", "sample_rate", "channels", "format", "decimate"
    )
    fmt = params.get("format", "csv")
    if fmt not in FORMATS:
        raise InvalidParameter(
            eid, "format", fmt, f"is not one of {', '.join(FORMATS)}", context="acquisition"
        )
    if not _SAFE_ID.match(job.execution_id):
        raise InvalidParameter(
            eid, "execution_id", job.execution_id, "is not usable as a file name"
        )
    duration = check_number(eid, params, "duration", 0.0, MAX_DURATION_S, context="acquisition")
    if duration <= 0:
        raise InvalidParameter(eid, "duration", duration, "must be positive", context="acquisition")
    decimate = decimate_of(eid, params)
    cap = inst.model.capture
    channels = channels_of(inst.equipment_id, params, cap.channels if cap else (1,))
    identity = inst.identity()
    provenance: dict[str, Any] = {
        "execution_id": job.execution_id,
        "job_id": job.job_id,
        "job_name": job.job_name,
        "scheduled_time": job.scheduled_time.isoformat() if job.scheduled_time else "none",
        "started_at": datetime.now(UTC).isoformat(timespec="microseconds"),
        "equipment_id": eid,
        "instrument": identity.raw,
        "agent_id": agent_id or "none",
        "resource": resource or "none",
        "profile": _describe_profile(profile),
        "profile_settings": _profile_settings(profile),
        "lablink_version": __version__,
    }
    header: list[tuple[str, Any]] = [
        ("lablink acquisition", job.execution_id),
        *(
            (key, json.dumps(value) if key == "profile_settings" else value)
            for key, value in provenance.items()
        ),
        (_ENDED_AT, ""),
    ]
    path = data_dir / "acquisitions" / f"{job.execution_id}.csv"
    capture = _Capture(
        ctx, path, header, max_samples_per_channel, decimate, limits or CaptureLimits()
    )
    if cap is not None:
        result = _capture_records(inst, cap, params, duration, channels, capture)
    else:
        result = _capture_points(inst, params, duration, capture)
    provenance["ended_at"] = result.pop("ended_at")
    result["data"]["provenance"] = provenance
    result["data"]["file_name"] = _file_name(job)
    return {"equipment_id": eid, "instrument": identity.as_dict(), "format": fmt, **result}


@dataclass(frozen=True)
class _Capture:
    """Where and how one capture is written."""

    ctx: RunContext
    path: Path
    header: list[tuple[str, Any]]
    max_samples: int
    decimate: bool
    limits: CaptureLimits

    def check_space(self, equipment_id: str, plan: CapturePlan) -> None:
        check_space(equipment_id, estimated_bytes(plan), self.path.parent, self.limits)


def _capture_records(
    inst: Instrument,
    cap: WaveformCapture,
    params: Mapping[str, Any],
    duration: float,
    channels: tuple[int, ...],
    capture: _Capture,
) -> dict[str, Any]:
    ctx, path, header, max_samples = capture.ctx, capture.path, capture.header, capture.max_samples
    rate_setting = inst.model.setting(cap.sample_rate)
    assert rate_setting is not None
    previous_rate = float(inst.read(cap.sample_rate))
    requested = params.get("sample_rate", previous_rate)
    rate = float(
        rate_setting.validate(
            inst.equipment_id, requested, parameter="sample_rate", context="acquisition"
        )
    )
    record_length = int(inst.read(cap.record_length))
    plan = plan_capture(
        duration, rate, channels, record_length, max_samples, decimate=capture.decimate
    )
    if rate_setting.minimum is not None and plan.stored_rate < rate_setting.minimum:
        raise InvalidParameter(
            inst.equipment_id,
            "duration",
            duration,
            f"needs decimation to {plan.stored_rate:g} Sa/s, below the instrument's minimum "
            f"{rate_setting.minimum:g} Sa/s (at most {max_samples} samples per channel are stored)",
            context="acquisition",
        )
    capture.check_space(inst.equipment_id, plan)
    y_inc = float(inst.read(cap.y_increment))
    y_orig = float(inst.read(cap.y_origin))
    actual_rate = float(inst.apply(cap.sample_rate, plan.stored_rate, parameter="sample_rate"))
    columns = [f"ch{ch}_{cap.unit}" for ch in channels]
    try:
        with CsvSink(path, [*header, *_plan_header(plan, actual_rate)], columns) as sink:
            remaining = plan.samples_stored
            for record in range(plan.records):
                ctx.check()
                inst.write(cap.arm)
                inst.query("*OPC?")  # blocks until the instrument has filled the record
                count = min(record_length, remaining)
                block = [
                    _record(inst, cap.data_query.format(channel=ch), record_length, y_inc, y_orig)
                    for ch in channels
                ]
                sink.write(sink.rows, actual_rate, [values[:count] for values in block])
                remaining -= count
                ctx.step(record + 1, plan.records, f"record {record + 1}/{plan.records}")
    finally:
        _restore_rate(inst, cap.sample_rate, previous_rate)
    return _summary(
        plan,
        sink,
        path,
        actual_rate,
        records=plan.records * len(channels),
        records_at_requested_rate=math.ceil(plan.samples_requested / record_length) * len(channels),
        unit=cap.unit,
    )


def _capture_points(
    inst: Instrument,
    params: Mapping[str, Any],
    duration: float,
    capture: _Capture,
) -> dict[str, Any]:
    ctx, path, header = capture.ctx, capture.path, capture.header
    low, high = POINT_RATE_LIMITS
    rate = check_number(
        inst.equipment_id, params, "sample_rate", low, high, context="acquisition", default=1.0
    )
    plan = plan_capture(duration, rate, (1,), 1, capture.max_samples, decimate=capture.decimate)
    primary = inst.model.measurement(inst.model.primary)
    assert primary is not None
    capture.check_space(inst.equipment_id, plan)
    with CsvSink(
        path, [*header, *_plan_header(plan, plan.stored_rate)], [f"{primary.name}_{primary.unit}"]
    ) as sink:
        start = ctx.clock()
        for i in range(plan.samples_stored):
            ctx.wait_until(start + i / plan.stored_rate)
            sink.write(i, plan.stored_rate, [[inst.measure(primary.name).value]])
            ctx.step(i + 1, plan.samples_stored, f"sample {i + 1}/{plan.samples_stored}")
    return _summary(
        plan,
        sink,
        path,
        plan.stored_rate,
        records=plan.samples_stored,
        records_at_requested_rate=plan.samples_requested,
        unit=primary.unit,
    )


def _record(inst: Instrument, query: str, length: int, y_inc: float, y_orig: float) -> list[float]:
    text = inst.query(query)
    try:
        values = [int(code) * y_inc + y_orig for code in text.split(",")]
    except ValueError as exc:
        raise CommunicationError(inst.equipment_id, query, "record is not integer codes") from exc
    if len(values) < length:
        raise CommunicationError(
            inst.equipment_id, query, f"record of {len(values)} points, expected {length}"
        )
    return values


def _restore_rate(inst: Instrument, setting: str, rate: float) -> None:
    """Leave the instrument's rate as the acquisition found it, without masking a failure."""
    try:
        inst.apply(setting, rate)
    except EquipmentError as exc:
        log.warning("could not restore sample rate", equipment_id=inst.equipment_id, error=exc)


def _describe_profile(profile: Mapping[str, Any] | None) -> str:
    if not profile:
        return "none"
    if profile.get("applied"):
        settings = ", ".join(f"{k}={v}" for k, v in profile.get("settings", {}).items())
        return f"{profile['id']} (applied: {settings or 'no settings'})"
    return f"{profile['id']} (not applied: {profile.get('reason', 'unknown')})"


def _profile_settings(profile: Mapping[str, Any] | None) -> dict[str, Any]:
    """The profile's settings as the instrument read them back (empty when none applied)."""
    if not profile or not profile.get("applied"):
        return {}
    return dict(profile.get("settings", {}))


def _file_name(job: Job) -> str:
    """What a download is called: the job's name, then the execution id."""
    stem = _NOT_IN_NAME.sub("_", job.job_name).strip("_.")[:64]
    return f"{stem}_{job.execution_id}.csv" if stem else f"{job.execution_id}.csv"


def _plan_header(plan: CapturePlan, actual_rate: float) -> list[tuple[str, Any]]:
    return [
        ("channels", ",".join(str(c) for c in plan.channels)),
        ("duration_s", f"{plan.duration:g}"),
        ("sample_rate_requested", f"{plan.sample_rate:.9g}"),
        ("sample_rate_stored", f"{actual_rate:.9g}"),
        ("decimation_factor", plan.decimation),
        ("samples_per_channel_requested", plan.samples_requested),
        ("samples_per_channel_stored", plan.samples_stored),
    ]


def _summary(
    plan: CapturePlan,
    sink: CsvSink,
    path: Path,
    actual_rate: float,
    *,
    records: int,
    records_at_requested_rate: int,
    unit: str,
) -> dict[str, Any]:
    assert sink.ended_at is not None
    columns = [{"name": "time_s", "unit": "s"}] + [
        {"name": name, "unit": unit} for name in sink.columns
    ]
    return {
        "file": str(path),
        "file_bytes": path.stat().st_size,
        "channels": list(plan.channels),
        "duration": plan.duration,
        "sample_rate": plan.sample_rate,
        "sample_count": sink.rows * len(plan.channels),
        "samples_per_channel": sink.rows,
        "samples_covered": plan.samples_requested * len(plan.channels),
        "decimated": plan.decimation > 1,
        "decimation_factor": plan.decimation,
        "stored_sample_rate": actual_rate,
        "record_length": plan.record_length,
        "records": records,
        "records_at_requested_rate": records_at_requested_rate,
        "statistics": sink.statistics(),
        "ended_at": sink.ended_at.isoformat(timespec="microseconds"),
        # Completed by the agent (bucket, object, sha256, status) once it knows where the
        # file goes: see equipment_agent/upload.py.
        "data": {
            "size": path.stat().st_size,
            "rows": sink.rows,
            "columns": columns,
            "sample_rate": actual_rate,
        },
    }
