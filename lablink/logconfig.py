"""Structured logs: JSON lines (one object per line) unless stdout is a terminal.

Every record carries a tag (``structlog.get_logger(tag="scheduler")``); the scheduler's are
tagged ``scheduler`` as the guide's "Log Tag" says, so `grep '"tag": "scheduler"'` finds them.
"""

from __future__ import annotations

import io
import logging
import os
import sys
from typing import TextIO, cast

import structlog


def configure_logging(level: str | None = None, *, json: bool | None = None) -> None:
    name = (level or os.environ.get("LABLINK_LOG_LEVEL", "info")).upper()
    numeric = logging.getLevelNamesMapping().get(name, logging.INFO)
    as_json = json if json is not None else not sys.stdout.isatty()
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=cast(TextIO, _CurrentStdout())),
        cache_logger_on_first_use=True,
    )


class _CurrentStdout(io.TextIOBase):
    """``sys.stdout`` as it is at each write, not as it was at configure time.

    Loggers are cached on first use: one cached while stdout was a temporary buffer (a CLI
    command run in-process, as under a test runner) would otherwise write to that buffer
    after it closed, and every later line would raise "I/O operation on closed file"."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()
