"""Whether what a fold keeps in memory between batches still describes its tables.

A fold that remembers rows (the jobs' states, the executions' job names) may trust that
memory only for the batch that follows the one it last folded, on the same connection. A
batch rolled back and folded again, a rebuild, another connection, or positions folded by
another process in between (another ``lablink`` on the same file) all break that chain: the
fold then forgets and reads its tables again. A gap in the positions it is handed (a rebuild
``--until`` skips events) also makes it forget: a cost, never a wrong row.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from lablink.events import RecordedEvent


class Continuity:
    def __init__(self) -> None:
        self._conn: sqlite3.Connection | None = None
        self._position = 0

    def holds(self, conn: sqlite3.Connection, events: Sequence[RecordedEvent]) -> bool:
        """Does ``events`` follow, on ``conn``, the batch this memory last folded?"""
        return conn is self._conn and events[0].position == self._position + 1

    def folded(self, conn: sqlite3.Connection, events: Sequence[RecordedEvent]) -> None:
        self._conn = conn
        self._position = events[-1].position

    def reset(self) -> None:
        self._conn = None
        self._position = 0
