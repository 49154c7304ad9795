"""The pure core imports no I/O: no asyncio, sqlite, NATS, HTTP or VISA."""

from __future__ import annotations

import ast
from pathlib import Path

import lablink

PURE = ["domain", "events"]
FORBIDDEN = {"asyncio", "sqlite3", "sqlite_utils", "nats", "litestar", "pyvisa", "httpx", "random"}


def test_domain_and_events_import_no_io() -> None:
    root = Path(lablink.__file__).parent
    offenders = []
    for package in PURE:
        for path in (root / package).rglob("*.py"):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                names: list[str] = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []


def test_domain_never_reads_the_wall_clock() -> None:
    root = Path(lablink.__file__).parent / "domain"
    text = "\n".join(p.read_text() for p in root.rglob("*.py"))
    assert "datetime.now(" not in text
    assert "time.time(" not in text
