"""Acquisitions: the CSV on disk, its header and statistics, and the bounds on a long capture."""

from __future__ import annotations

import csv
import math
import time
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from lablink.equipment_agent.acquisition import plan_capture
from lablink.equipment_agent.inprocess import InProcessExecutor
from lablink.instruments.execution import Outcome
from tests.support.bench import ProgressLog, copy_bench, execution_request

WEEKLY = {"duration": 600, "sample_rate": 1_000_000, "channels": [1, 2, 3, 4]}


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
async def executor(tmp_path: Path, data_dir: Path) -> AsyncIterator[InProcessExecutor]:
    ex = InProcessExecutor.simulated(data_dir, bench_yaml=copy_bench(tmp_path / "bench"))
    yield ex
    await ex.aclose()


def read_csv(path: Path) -> tuple[dict[str, str], list[str], list[list[float]]]:
    header: dict[str, str] = {}
    with path.open(encoding="utf-8", newline="") as f:
        lines = iter(f)
        for line in lines:
            if not line.startswith("# "):
                columns = line.strip().split(",")
                break
            key, _, value = line[2:].rstrip("\n").partition(": ")
            header[key] = value
        rows = [[float(v) for v in row] for row in csv.reader(lines)]
    return header, columns, rows


def completed(outcome: Outcome) -> dict[str, Any]:
    assert outcome.status == "completed", outcome.error
    return outcome.result


async def test_guide_acquisition_on_oscilloscope_1(
    executor: InProcessExecutor, data_dir: Path
) -> None:
    request = execution_request(
        "oscilloscope_1",
        "acquisition",
        {"duration": 60, "sample_rate": 1000, "channels": [1, 2]},
        name="Line check",
    )
    progress = ProgressLog()
    result = completed(await executor.execute(request, progress))

    path = data_dir / "acquisitions" / f"{request.execution_id}.csv"
    assert result["file"] == str(path)
    assert result["sample_count"] == 120_000
    assert result["samples_per_channel"] == 60_000
    assert result["decimated"] is False
    assert result["decimation_factor"] == 1
    assert result["records"] == 240  # 60,000 samples in records of 500, two channels
    assert result["file_bytes"] == path.stat().st_size

    header, columns, rows = read_csv(path)
    assert header["lablink acquisition"] == request.execution_id
    assert header["job_id"] == request.job_id
    assert header["job_name"] == "Line check"
    assert header["instrument"] == "LabLink Sim,DSO-1104,SN-SC1-0001,2.1.0"
    assert header["profile"] == "none"
    assert header["sample_rate_stored"] == "1000"
    assert columns == ["time_s", "ch1_V", "ch2_V"]
    assert len(rows) == 60_000
    assert rows[:3] == [[0.0, 0.0, 0.5], [0.001, 0.06, 0.5], [0.002, 0.13, 0.5]]
    assert rows[-1][0] == pytest.approx(59.999)

    # The statistics in the result are those of the file.
    for i, name in enumerate(["ch1_V", "ch2_V"], start=1):
        column = [row[i] for row in rows]
        stats = result["statistics"][name]
        assert stats["min"] == pytest.approx(min(column))
        assert stats["max"] == pytest.approx(max(column))
        assert stats["mean"] == pytest.approx(math.fsum(column) / len(column), abs=1e-9)
    assert result["statistics"]["ch1_V"]["max"] == pytest.approx(1.0)
    assert result["statistics"]["ch2_V"]["min"] == pytest.approx(-0.5)

    fractions = [f for f, _, _ in progress.reports]
    assert 1 < len(fractions) <= 22
    assert fractions == sorted(fractions)
    assert fractions[-1] == 1.0

    # The capture leaves the scope's sample rate as it found it.
    state = completed(
        await executor.execute(execution_request("oscilloscope_1", "state_capture"), ProgressLog())
    )
    assert state["settings"]["sample_rate"]["value"] == 1e6


@pytest.mark.slow
async def test_weekly_capture_is_decimated_bounded_and_quick(
    executor: InProcessExecutor, data_dir: Path
) -> None:
    request = execution_request(
        "scope_1",
        "acquisition",
        WEEKLY,
        name="Weekly High-Resolution Waveform Capture",
        profile_id="high_res_1GS",
    )
    started = time.perf_counter()
    result = completed(await executor.execute(request, ProgressLog()))
    elapsed = time.perf_counter() - started

    assert result["samples_covered"] == 2_400_000_000
    assert result["decimated"] is True
    assert result["decimation_factor"] == 6_000
    assert result["samples_per_channel"] == 100_000
    assert result["sample_count"] == 400_000
    assert result["stored_sample_rate"] == pytest.approx(1e6 / 6_000)
    assert result["records"] == 800  # 200 records of 500 per channel
    assert result["records_at_requested_rate"] == 4_800_000
    # Simulated instrument time: ten minutes of signal, not ten minutes of waiting.
    assert elapsed < 30
    assert result["file_bytes"] < 100_000 * 64  # rows of five short numbers

    header, columns, rows = read_csv(Path(result["file"]))
    assert header["job_name"] == "Weekly High-Resolution Waveform Capture"
    assert header["instrument"] == "LabLink Sim,DSO-1104,SN-SC1-0002,2.1.0"
    assert header["profile"].startswith("high_res_1GS (not applied")
    assert header["decimation_factor"] == "6000"
    assert header["samples_per_channel_requested"] == "600000000"
    assert columns == ["time_s", "ch1_V", "ch2_V", "ch3_V", "ch4_V"]
    assert len(rows) == 100_000
    assert rows[-1][0] == pytest.approx(600, abs=0.01)
    assert result["statistics"]["ch4_V"]["mean"] == pytest.approx(0.25, abs=1e-3)


@pytest.mark.slow
async def test_capture_holds_one_record_in_memory_not_the_capture(
    tmp_path: Path, data_dir: Path
) -> None:
    executor = InProcessExecutor.simulated(
        data_dir, bench_yaml=copy_bench(tmp_path / "bench"), max_samples_per_channel=10_000
    )
    tracemalloc.start()
    try:
        outcome = await executor.execute(
            execution_request("scope_1", "acquisition", WEEKLY), ProgressLog()
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await executor.aclose()

    assert completed(outcome)["sample_count"] == 40_000
    # 40,000 stored samples as Python floats in lists would take well over 1 MB by themselves.
    assert peak < 1_000_000


async def test_max_samples_per_channel_is_configurable(tmp_path: Path, data_dir: Path) -> None:
    executor = InProcessExecutor.simulated(
        data_dir, bench_yaml=copy_bench(tmp_path / "bench"), max_samples_per_channel=1_000
    )
    try:
        params = {"duration": 60, "sample_rate": 1000, "channels": [3]}
        outcome = await executor.execute(
            execution_request("oscilloscope_1", "acquisition", params), ProgressLog()
        )
    finally:
        await executor.aclose()

    result = completed(outcome)
    assert result["decimation_factor"] == 60
    assert result["samples_per_channel"] == 1_000
    assert result["records"] == 2
    _, _, rows = read_csv(Path(result["file"]))
    assert len(rows) == 1_000
    assert rows[1][0] == pytest.approx(0.06)  # one stored sample per 60 ms


async def test_sensor_acquisition_samples_the_temperature(executor: InProcessExecutor) -> None:
    params = {"duration": 300, "format": "csv"}
    result = completed(
        await executor.execute(execution_request("sensor_1", "acquisition", params), ProgressLog())
    )

    assert result["samples_per_channel"] == 300  # one a second by default
    header, columns, rows = read_csv(Path(result["file"]))
    assert columns == ["time_s", "temperature_degC"]
    assert all(22.0 <= row[1] <= 24.0 for row in rows)
    assert header["instrument"].startswith("LabLink Sim,TMP-117")


@pytest.mark.parametrize(
    ("equipment_id", "parameters", "parameter", "fragment"),
    [
        ("oscilloscope_1", {"duration": 1, "channels": [5]}, "channels", "[1, 2, 3, 4]"),
        ("oscilloscope_1", {"duration": 1, "channels": [1, 1]}, "channels", "distinct"),
        ("oscilloscope_1", {"duration": 1, "sample_rate": 2e9}, "sample_rate", "maximum 1e+09"),
        ("oscilloscope_1", {"duration": 1, "format": "hdf5"}, "format", "not one of csv"),
        ("oscilloscope_1", {"sample_rate": 1000}, "duration", "is required"),
        ("oscilloscope_1", {"duration": 0}, "duration", "must be positive"),
        ("oscilloscope_1", {"duration": 1, "trigger": "rising"}, "trigger", "not accepted"),
        ("sensor_1", {"duration": 10, "channels": [2]}, "channels", "[1]"),
    ],
)
async def test_bad_acquisition_parameters(
    executor: InProcessExecutor,
    data_dir: Path,
    equipment_id: str,
    parameters: dict[str, Any],
    parameter: str,
    fragment: str,
) -> None:
    outcome = await executor.execute(
        execution_request(equipment_id, "acquisition", parameters), ProgressLog()
    )

    assert outcome.error is not None
    assert outcome.error.type == "invalid_parameter"
    assert outcome.error.details["parameter"] == parameter
    assert fragment in outcome.error.message
    assert not (data_dir / "acquisitions").exists() or not any(
        (data_dir / "acquisitions").iterdir()
    )


def test_plan_capture_decimates_to_the_cap() -> None:
    plan = plan_capture(600, 1e6, (1, 2, 3, 4), 500, 100_000)
    assert (plan.samples_requested, plan.decimation, plan.samples_stored) == (
        600_000_000,
        6_000,
        100_000,
    )
    assert plan.records == 200
    assert plan.stored_rate == pytest.approx(166.6667, rel=1e-6)

    small = plan_capture(0.0001, 1000, (1,), 500, 100_000)
    assert (small.samples_requested, small.decimation, small.records) == (1, 1, 1)
