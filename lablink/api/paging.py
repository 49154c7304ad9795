"""Paging parameters, declared once for every list that pages.

Lists newest first (executions, alarms) page backwards with ``cursor`` = the ``next_cursor``
of the previous page (a position: everything older than it); the audit trail pages forwards
from a position (``cursor=0`` is the start of the log); the jobs list pages by ``offset``.
Out-of-range values are a 400 naming the parameter (Litestar checks the bounds, the
exception map names them).
"""

from __future__ import annotations

from typing import Annotated

from litestar.params import QueryParameter

# A position fits SQLite's 64-bit integer; beyond it, a 400 rather than an overflow.
MAX_POSITION = 2**62

Limit = Annotated[int, QueryParameter(ge=1, le=1000)]
Offset = Annotated[int, QueryParameter(ge=0, le=MAX_POSITION)]
OlderThan = Annotated[
    int | None,
    QueryParameter(ge=1, le=MAX_POSITION, description="next_cursor of the previous page"),
]
After = Annotated[
    int | None,
    QueryParameter(ge=0, le=MAX_POSITION, description="next_cursor of the previous page"),
]
