"""Captured data of a job's executions: when the agent's word that an upload completed counts.

An acquisition whose upload to the object store was still pending when its result was sent
(``result["data"]["status"] == "pending_upload"``) is remembered by the job
(``JobState.awaiting_data``); the agent's later report that the store has the file is recorded
as ``ExecutionDataStored`` once; the agent's report that the upload can never be made (its
file went or changed) as ``ExecutionDataRemoved`` with reason ``lost``. A redelivered report
records nothing; one for a capture whose data was removed while it awaited the upload is
answered ``removed`` (the object is deleted). A job remembers only so many pending captures:
the word for one it forgot is recorded all the same (the executions view changes only a row
still ``pending_upload``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from lablink.domain.firing import Decision
from lablink.domain.job import JobState, evolve
from lablink.events import ExecutionDataRemoved, ExecutionDataStored

# ``stored``: recorded now; ``lost``: the agent's loss of it recorded now (ExecutionDataRemoved,
# reason ``lost``); ``removed``: its data was recorded removed while it awaited the upload
# (the object that came is to be deleted); ``running``: its result is not recorded yet (try
# again later); ``foreign``: the job drives another instrument; ``unknown``: no such job, or
# the word was recorded before (a repeated report).
DataVerdict = Literal["stored", "lost", "removed", "running", "foreign", "unknown"]


def data_stored_verdict(
    state: JobState, execution_id: str, equipment_id: str, *, lost: bool = False
) -> DataVerdict:
    if state.spec is None or not state.exists:
        return "unknown"
    if state.spec.equipment_id != equipment_id:
        return "foreign"
    recorded: DataVerdict = "lost" if lost else "stored"
    if execution_id in state.awaiting_data:
        return recorded
    if (
        execution_id in state.running
        or execution_id in state.pending
        or execution_id in state.unsettled
    ):
        return "running"
    if execution_id in state.data_removed:
        return "removed"
    if execution_id in state.data_stored:
        return "unknown"
    # Ended, and no longer (or never) remembered as awaiting its upload: a job with more
    # captures pending than it remembers forgets the oldest. Recorded all the same: the
    # view changes only a capture it still shows pending_upload, so a word for a capture
    # that never was pending changes nothing there.
    return recorded


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
    lost: str = "",
) -> Decision:
    verdict = data_stored_verdict(state, execution_id, equipment_id, lost=bool(lost))
    event: ExecutionDataStored | ExecutionDataRemoved
    if verdict == "stored":
        event = ExecutionDataStored(
            job_id=state.job_id,
            execution_id=execution_id,
            object=object,
            size=size,
            sha256=sha256,
            stored_at=stored_at,
            agent_id=agent_id,
        )
    elif verdict == "lost":
        event = ExecutionDataRemoved(
            job_id=state.job_id,
            execution_id=execution_id,
            object=object,
            size=size,
            removed_at=stored_at,
            reason="lost",
            detail=lost,
        )
    else:
        return Decision([], state)
    return Decision([event], evolve(state, event))
