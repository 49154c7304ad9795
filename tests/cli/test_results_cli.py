"""docs/data.md's commands, run as written: `lablink results` (and curl) in child processes
against a real server over a week of hourly measurements, the CSV parsed back."""

from __future__ import annotations

import asyncio
import csv
import os
import re
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx
import nats
import pytest
from typer.testing import CliRunner

from lablink.bus.data_bucket import DataBucket, ensure_data_bucket
from lablink.bus.options import NatsOptions
from lablink.bus.server import NatsServer
from lablink.cli import app
from lablink.clock import ManualClock
from lablink.equipment_agent.upload import file_sha256, new_nuid, put_file
from lablink.instruments.execution import Outcome
from lablink.keys import create_key
from tests.support.harness import Harness
from tests.support.series import (
    ACQUISITION,
    MEASUREMENT,
    ScriptedExecutor,
    fire,
    measured,
    served,
    voltage,
)

pytestmark = [pytest.mark.e2e]

ROOT = Path(__file__).parent.parent.parent
BIN = str(Path(sys.executable).parent)
WEEK = "A week of measurements into a spreadsheet"


def section(title: str) -> str:
    text = (ROOT / "docs" / "data.md").read_text()
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else len(text)]


def bash_lines(text: str) -> list[str]:
    """The command lines of the section's ```bash blocks."""
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


async def run(line: str, cwd: Path, **env: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        line,
        cwd=cwd,
        env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    return process.returncode or 0, out.decode()


@pytest.mark.slow
async def test_the_documented_commands_put_a_week_of_measurements_in_a_csv(
    tmp_path: Path,
) -> None:
    clock = ManualClock(datetime(2026, 11, 25, 12, 0, tzinfo=UTC))
    h = Harness(tmp_path / "data" / "scheduler.db", clock)
    h.executor = ScriptedExecutor(measured)
    await h.start()
    try:
        job = h.service.create_job(MEASUREMENT, "alice")
        h.engine.plan(job)
        times = await fire(h, job, 24 * 9)
        _, key = create_key(h.store, name="sheet", role="viewer", actor="t", now=clock.now())
        week = [(t, voltage(n)) for n, t in enumerate(times) if "2026-11-26" <= t < "2026-12-03"]
        assert len(week) == 7 * 24
        lines = bash_lines(section(WEEK))
        assert any(line.startswith("lablink results") for line in lines)
        assert any(line.startswith("curl") for line in lines)
        async with served(h) as url:
            for line in lines:
                (tmp_path / "week.csv").unlink(missing_ok=True)
                code, output = await run(
                    line, tmp_path, LABLINK_URL=url, LABLINK_API_KEY=key, JOB=job
                )
                assert code == 0, (line, output)
                with (tmp_path / "week.csv").open(newline="") as file:
                    rows = list(csv.DictReader(file))
                assert [(r["scheduled_time"], float(r["value"])) for r in rows] == week, line
                assert {r["unit"] for r in rows} == {"V"}
            # Without a key: the server's refusal, named, exit 1, and no file left behind.
            (tmp_path / "week.csv").unlink()
            code, output = await run(lines[0], tmp_path, LABLINK_URL=url, JOB=job)
            assert code == 1
            assert "HTTP 401" in output
            assert not (tmp_path / "week.csv").exists()
            assert not (tmp_path / "week.csv.partial").exists()
            # The table, and CSV to stdout.
            code, table = await run(
                f'lablink results "$JOB" --since {times[-3]} --until {times[-1]}',
                tmp_path,
                LABLINK_URL=url,
                LABLINK_API_KEY=key,
                JOB=job,
                COLUMNS="200",
            )
            assert code == 0, table
            assert f"results of {job}: 2" in table
            assert repr(voltage(len(times) - 3)) in table
            code, text = await run(
                'lablink results "$JOB" --csv'
                " --since 2026-11-30T00:00:00+01:00 --until 2026-11-30T03:00:00Z",
                tmp_path,
                LABLINK_URL=url,
                LABLINK_API_KEY=key,
                JOB=job,
            )
            assert code == 0, text
            got = [r["scheduled_time"] for r in csv.DictReader(text.splitlines())]
            assert got == [t for t in times if "2026-11-29T23" <= t < "2026-11-30T03"]
            code, text = await run(
                "lablink results nope", tmp_path, LABLINK_URL=url, LABLINK_API_KEY=key
            )
            assert code == 1
            assert "HTTP 404" in text
            assert "'nope'" in text
    finally:
        await h.close()


def test_a_bad_time_is_refused_before_anything_is_asked() -> None:
    result = CliRunner().invoke(
        app, ["results", "job_1", "--since", "last week", "--url", "http://127.0.0.1:9"]
    )
    assert result.exit_code == 2
    assert "--since" in result.output
    assert "7d" in result.output


def test_an_unreachable_server_is_named() -> None:
    result = CliRunner().invoke(app, ["results", "job_1", "--url", "http://127.0.0.1:9"])
    assert result.exit_code == 1
    assert "cannot reach the server" in result.output


CAPTURE_ROWS = [("0.000000", "0.125"), ("0.001000", "-0.25"), ("0.002000", "1.5")]


@pytest.mark.nats
@pytest.mark.slow
async def test_the_documented_capture_into_python(tmp_path: Path, nats_server: NatsServer) -> None:
    """An acquisition's file in the LABLINK_DATA bucket, read back over HTTP with the key, its
    provenance header skipped: by the same request parsed with the csv module, and by
    docs/data.md's own pandas line."""
    capture = tmp_path / "capture.csv"
    capture.write_text(
        "# job_id: job_000001\n# profile: high_res_1GS\ntime_s,ch1_V\n"
        + "".join(f"{t},{v}\n" for t, v in CAPTURE_ROWS)
    )
    sha256 = file_sha256(capture)
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await ensure_data_bucket(js)
        await put_file(
            js,
            capture,
            execution_id="exec_000001",
            name="acquisitions/capture.csv",
            nuid=new_nuid(),
            sha256=sha256,
            headers={},
        )
    finally:
        await nc.close()

    def stored(n: int) -> Outcome:
        return Outcome.ok(
            equipment_id="scope_1",
            format="csv",
            data={
                "bucket": "LABLINK_DATA",
                "object": "acquisitions/capture.csv",
                "file_name": "capture.csv",
                "size": capture.stat().st_size,
                "sha256": sha256,
                "rows": len(CAPTURE_ROWS),
                "columns": [{"name": "time", "unit": "s"}, {"name": "ch1", "unit": "V"}],
                "sample_rate": 1000.0,
                "provenance": {"job_id": "job_000001"},
                "status": "stored",
            },
        )

    h = Harness(tmp_path / "data" / "scheduler.db", ManualClock(datetime(2026, 12, 1, tzinfo=UTC)))
    h.executor = ScriptedExecutor(stored)
    await h.start()
    bucket = DataBucket(NatsOptions(url=nats_server.url))
    try:
        job = h.service.create_job(ACQUISITION, "alice")
        h.engine.plan(job)
        await fire(h, job, 1)
        _, key = create_key(h.store, name="py", role="viewer", actor="t", now=h.clock.now())
        async with served(h, data=bucket) as url:
            # The execution id, as a user finds it: the job's series.
            code, text = await run(
                'lablink results "$JOB" --csv',
                tmp_path,
                LABLINK_URL=url,
                LABLINK_API_KEY=key,
                JOB=job,
            )
            assert code == 0, text
            (row,) = list(csv.DictReader(text.splitlines()))
            execution = row["execution_id"]
            assert (row["object"], row["data_status"]) == ("acquisitions/capture.csv", "stored")
            async with httpx.AsyncClient() as client:
                answer = await client.get(
                    f"{url}/api/scheduler/executions/{execution}/data",
                    headers={"X-API-Key": key},
                )
            assert answer.status_code == 200, answer.text
            body = [line for line in answer.text.splitlines() if not line.startswith("#")]
            parsed = list(csv.DictReader(body))
            assert [(r["time_s"], r["ch1_V"]) for r in parsed] == CAPTURE_ROWS
            # The documented one-liner itself, run as a user would (pandas is a test dependency).
            (line,) = [ln for ln in bash_lines(section("A capture into Python")) if "pandas" in ln]
            code, output = await run(
                line, tmp_path, LABLINK_URL=url, LABLINK_API_KEY=key, EXEC=execution
            )
            assert code == 0, output
            assert "count" in output
            assert "ch1_V" in output
    finally:
        await bucket.aclose()
        await h.close()
