"""Every table has one owner module; no other module writes SQL against it.

The SQL of ``lablink/`` is found by reading each module's string constants (with the AST,
f-strings put together with the module-level string constants they name) and taking the
targets of ``FROM``, ``JOIN``, ``INTO``, ``UPDATE``, ``DELETE FROM`` and ``TABLE`` from
them, and the tables named to sqlite-utils (``db.table("name")``). Each target must be owned
by the module it appears in.

The owner map lives here, not next to the schema: it is a rule about the code (like the
import contracts in pyproject.toml), which no running code needs. It is checked against
the schema twice, so the two cannot drift apart: every projection's declared ``tables``
belong to its own module, and every table a fresh database holds has an owner.
"""

from __future__ import annotations

import ast
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from lablink.logstore import open_store
from lablink.projections.runner import default_projections
from tests.support.views import views_db

ROOT = Path(__file__).parent.parent
PACKAGE = ROOT / "lablink"

# Table -> the module that owns it: creates it, and holds every statement that names it.
OWNERS: dict[str, str] = {
    # The event log; others read it through the store's reads (LogReader, EventStore).
    "events": "lablink.eventstore.sqlite",
    # A cluster copy's positions that were no events of the record (the lease's messages).
    "passed_over": "lablink.eventstore.sqlite",
    # The projector's bookkeeping.
    "projection_checkpoints": "lablink.projections.runner",
    "projection_meta": "lablink.projections.runner",
    # The relay's published position.
    "relay_checkpoints": "lablink.bus.relay",
    # The notifier's low-water mark of alarms it has settled.
    "notify_checkpoints": "lablink.notify.notifier",
    # When each API key was last used: operational, not folded from the log.
    "api_key_usage": "lablink.projections.keys",
    # The projections: each module's query functions are the only way in.
    "jobs": "lablink.projections.jobs",
    "executions": "lablink.projections.executions",
    "execution_jobs": "lablink.projections.executions",
    "execution_data_removals": "lablink.projections.executions",
    "job_history": "lablink.projections.history",
    "stats_jobs": "lablink.projections.statistics",
    "stats_job_counts": "lablink.projections.statistics",
    "stats_open": "lablink.projections.statistics",
    "stats_buckets": "lablink.projections.statistics",
    "api_keys": "lablink.projections.keys",
    "equipment": "lablink.projections.equipment",
    "profiles": "lablink.projections.profiles",
    "alarms": "lablink.projections.alarms",
    "results": "lablink.projections.results",
    "result_pending": "lablink.projections.results",
    "result_jobs": "lablink.projections.results",
    "calibrations": "lablink.projections.calibration",
    "calibration_controls": "lablink.projections.calibration",
}

# Modules with a database of their own: their tables are not LabLink's database's.
OWN_DATABASES: dict[str, set[str]] = {
    # Each agent's ledger of accepted executions and of captures not yet in the object store
    # (its own file beside the agent).
    "lablink.equipment_agent.ledger": {"executions", "uploads", "boots", "lease_epochs"},
}

# SQLite's own catalogue and table-valued functions: no owner to have.
BUILTIN = {"sqlite_master", "sqlite_schema", "json_each", "json_tree", "pragma_table_info"}

# Upper-case keywords only: the code writes SQL in upper case, prose in lower case.
# ``DO UPDATE SET`` (an upsert's update clause) and a trigger's ``BEFORE UPDATE ON`` name
# no table there (the trigger's table follows ``ON``, and its creator owns the table).
_TARGET = re.compile(
    r"\b(?:FROM|JOIN|INTO|(?<!DO )(?<!BEFORE )UPDATE|TABLE(?: IF (?:NOT )?EXISTS)?)\s+"
    r"(?:OR \w+ INTO\s+)?(?:(?:main|temp|log)\.)?\"?([A-Za-z_][A-Za-z0-9_]*|\{\?\})\"?\s*(\()?"
)
_DYNAMIC = "{?}"


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def _docstrings(tree: ast.Module) -> set[int]:
    """ids of the docstring nodes: prose, not SQL."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def _constants(tree: ast.Module) -> dict[str, str]:
    """Module-level ``NAME = "text"`` (or an f-string of such names)."""
    names: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            value = node.value
            text = _text(value, names) if value is not None else None
            for target in targets:
                if isinstance(target, ast.Name) and text is not None:
                    names[target.id] = text
    return names


def _text(node: ast.expr, names: dict[str, str]) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts: list[str] = []
        for value in node.values:
            if isinstance(value, ast.Constant):
                parts.append(str(value.value))
            elif isinstance(value, ast.FormattedValue) and isinstance(value.value, ast.Name):
                parts.append(names.get(value.value.id, _DYNAMIC))
            else:
                parts.append(_DYNAMIC)
        return "".join(parts)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _text(node.left, names), _text(node.right, names)
        if left is not None and right is not None:
            return left + right
    return None


def sql_strings(path: Path) -> Iterator[tuple[int, str]]:
    """(line, text) of every string in the module that is not a docstring."""
    tree = ast.parse(path.read_text(), filename=str(path))
    docs = _docstrings(tree)
    names = _constants(tree)
    inner: set[int] = set()
    for node in ast.walk(tree):
        if id(node) in docs or id(node) in inner:
            continue
        if isinstance(node, ast.JoinedStr):
            inner.update(id(v) for v in node.values)
        if isinstance(node, ast.Constant | ast.JoinedStr):
            text = _text(node, names)
            if text is not None:
                yield node.lineno, text


def targets(text: str) -> set[str]:
    """The tables a statement names (a name followed by ``(`` after FROM is a function)."""
    found: set[str] = set()
    for match in _TARGET.finditer(text):
        name, call = match.group(1), match.group(2)
        if name == _DYNAMIC or name in BUILTIN or (call and "FROM" in match.group(0)):
            continue
        found.add(name)
    return found


def utils_tables(path: Path) -> Iterator[tuple[int, str]]:
    """(line, table) of sqlite-utils' ``db.table("name")``: a table named without SQL."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names = _constants(tree)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "table"
            and node.args
        ):
            arg = node.args[0]
            text = names.get(arg.id) if isinstance(arg, ast.Name) else _text(arg, names)
            if text is not None:
                yield node.lineno, text


def touches() -> dict[str, dict[str, list[int]]]:
    """module -> table -> lines where the module's SQL (or sqlite-utils) names it."""
    found: dict[str, dict[str, list[int]]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        named = [(line, t) for line, text in sql_strings(path) for t in targets(text)]
        for line, table in [*named, *utils_tables(path)]:
            found.setdefault(module, {}).setdefault(table, []).append(line)
    return found


def test_the_scanner_reads_sql_as_written_here() -> None:
    assert targets("SELECT a FROM jobs j JOIN executions e ON e.job_id = j.job_id") == {
        "jobs",
        "executions",
    }
    assert targets("INSERT OR IGNORE INTO alarms (a) VALUES (?)") == {"alarms"}
    assert targets(
        "INSERT INTO relay_checkpoints (name) VALUES (?)"
        " ON CONFLICT(name) DO UPDATE SET position = excluded.position"
    ) == {"relay_checkpoints"}
    assert targets("UPDATE api_keys SET revoked = 1") == {"api_keys"}
    assert targets("DELETE FROM executions WHERE seq < ?") == {"executions"}
    assert targets("CREATE TABLE IF NOT EXISTS events (position INTEGER)") == {"events"}
    assert targets("SELECT 1 FROM json_each(jobs.tags) WHERE value = ?") == set()
    assert targets("rows from the log, into memory") == set()
    assert targets("SELECT * FROM {?} WHERE k = ?") == set()
    # A schema-qualified name (the log attached to a views connection) names its table.
    assert targets("INSERT INTO main.t SELECT a FROM log.events") == {"t", "events"}


def test_f_strings_resolve_module_constants(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        '"""Reads FROM nowhere (a docstring)."""\n'
        'TABLE = "api_key_usage"\n'
        'SQL = f"SELECT key_id FROM {TABLE}"\n'
        'def f(t: str) -> str:\n    return f"DELETE FROM {t}" + " AND x"\n'
    )
    found = {table for _, text in sql_strings(module) for table in targets(text)}
    assert found == {"api_key_usage"}


def test_every_table_is_touched_only_by_its_owner() -> None:
    strays: list[str] = []
    for module, tables in touches().items():
        own = OWN_DATABASES.get(module, set())
        for table, lines in sorted(tables.items()):
            if table in own:
                continue
            owner = OWNERS.get(table)
            if owner != module:
                where = ", ".join(map(str, lines))
                strays.append(f"{module} (lines {where}): {table} (owner: {owner})")
    assert strays == []


def test_projections_declare_the_tables_the_map_gives_them() -> None:
    for projection in default_projections():
        module = type(projection).__module__
        for table in projection.tables:
            assert OWNERS.get(table) == module, (table, module)


def test_every_table_of_a_fresh_database_has_an_owner(tmp_path: Path) -> None:
    from lablink.bus.relay import CHECKPOINTS

    path = tmp_path / "scheduler.db"
    open_store(path).close()

    def tables_of(file: Path, *, relay: bool = False) -> set[str]:
        conn = sqlite3.connect(file)
        try:
            if relay:
                conn.execute(CHECKPOINTS)  # made when a relay first opens the database
            return {
                row[0]
                for row in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'"
                    " AND name NOT LIKE 'sqlite_%'"
                )
            }
        finally:
            conn.close()

    # The log's file holds the log (and the relay's position); views.db, the views.
    in_log = tables_of(path, relay=True)
    in_views = tables_of(views_db(path))
    assert in_log == {"events", "relay_checkpoints"}
    assert (in_log | in_views) - OWNERS.keys() == set()
    assert {"jobs", "executions", "alarms"} <= in_views
