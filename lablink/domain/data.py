"""Captured data of a job's executions: when the agent's word that an upload completed counts.

An acquisition whose upload to the object store was still pending when its result was sent
(``result["data"]["status"] == "pending_upload"``) is remembered by the job
(``JobState.awaiting_data``); the agent's later report that the store has the file is recorded
as ``ExecutionDataStored`` once, for such an execution only. A redelivered report, or one for
an execution whose result said ``stored`` already, records nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from lablink.domain.firing import Decision
from lablink.domain.job import JobState, evolve
from lablink.events import ExecutionDataStored

# ``stored``: recorded now; ``running``: its result is not recorded yet (try again later);
# ``foreign``: the job drives another instrument; ``unknown``: nothing awaits it.
DataVerdict = Literal["stored", "running", "foreign", "unknown"]


def data_stored_verdict(state: JobState, execution_id: str, equipment_id: str) -> DataVerdict:
    if state.spec is None or not state.exists:
        return "unknown"
    if state.spec.equipment_id != equipment_id:
        return "foreign"
    if execution_id in state.awaiting_data:
        return "stored"
    if (
        execution_id in state.running
        or execution_id in state.pending
        or execution_id in state.unsettled
    ):
        return "running"
    return "unknown"


def decide_data_stored(
    state: JobState,
    execution_id: str,
    *,
    equipment_id: str,
    object: str,
    size: int,
    sha256: str,
    stored_at: datetime,
    agent_id: str = "",
) -> Decision:
    if data_stored_verdict(state, execution_id, equipment_id) != "stored":
        return Decision([], state)
    event = ExecutionDataStored(
        job_id=state.job_id,
        execution_id=execution_id,
        object=object,
        size=size,
        sha256=sha256,
        stored_at=stored_at,
        agent_id=agent_id,
    )
    return Decision([event], evolve(state, event))
