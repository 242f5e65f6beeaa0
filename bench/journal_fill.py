"""A store filled with many runs quickly, and how many bytes a store and its artifacts take.

:func:`fill` copies one real run — its ``runs`` row and every row of the tables keyed by its
``run_id`` (``steps``, ``host_outcomes``, ``approvals``) — ``count`` times, with bulk
``INSERT … SELECT`` statements that number the copies in SQL (``WITH RECURSIVE``: the same
statement on SQLite and PostgreSQL), each copy one minute older than the last. The columns are
read from the store, so the copies follow whatever the schema holds. It is how the benchmark puts
100,000 runs in a store in seconds instead of running 100,000 runs: the rows are exactly what
``cairn run`` wrote, only the ids and times differ.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from engine.core.store.database import Database
from engine.core.store.location import locate

CHILDREN = ("steps", "host_outcomes", "approvals")
"""Tables whose rows belong to a run by ``run_id``."""
BATCH = 10_000
"""Runs copied per statement: each statement stays well inside PostgreSQL's statement timeout."""
COPIES = "WITH RECURSIVE n(i) AS (SELECT CAST(? AS INTEGER) UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
"""The copy numbers ``first`` … ``last``, as rows of ``n``."""


def fill(
    store: str | Path, template: str, count: int, progress: Callable[[int], None] = lambda done: None
) -> None:
    """``count`` copies of run ``template`` (ids ``TEMPLATE-1`` … ``TEMPLATE-count``), in batches."""
    db = Database(store, write=True, what="the benchmark's store")
    try:
        tables = db.tables()
        statements = [_copy_runs(db)]
        statements += [_copy_children(db, table) for table in CHILDREN if table in tables]
        for first in range(1, count + 1, BATCH):
            last = min(count, first + BATCH - 1)
            with db.transaction(f"copy runs {first}-{last}") as tx:
                for statement in statements:
                    tx.execute(statement, (first, last, template))
            progress(last)
        if db.dialect == "postgresql":
            with db.transaction("analyze the copies") as tx:
                tx.execute("ANALYZE")  # what autovacuum does long before a store holds this many runs
    finally:
        db.close()


def _copy_runs(db: Database) -> str:
    columns = sorted(db.columns("runs"))
    values = [_value(column, "id") for column in columns]
    return (
        f"{COPIES}INSERT INTO runs ({', '.join(columns)})"
        f" SELECT {', '.join(values)} FROM runs t, n WHERE t.id = ?"
    )


def _copy_children(db: Database, table: str) -> str:
    columns = sorted(db.columns(table))
    values = [_value(column, "run_id") for column in columns]
    return (
        f"{COPIES}INSERT INTO {table} ({', '.join(columns)})"
        f" SELECT {', '.join(values)} FROM {table} t, n WHERE t.run_id = ?"
    )


def _value(column: str, key: str) -> str:
    """What a copy's ``column`` holds: the run id numbered, times a minute per copy older, the rest as is."""
    if column == key:
        return f"t.{column} || '-' || CAST(n.i AS TEXT)"
    if column in ("started_at", "finished_at", "at"):
        return f"t.{column} - n.i * 60"
    return f"t.{column}"


def store_bytes(store: str | Path) -> int:
    """What the store takes: a SQLite file and its WAL after a checkpoint (``TRUNCATE``); for PostgreSQL,
    ``pg_total_relation_size`` (data, indexes, TOAST) of every table in the store's schema."""
    where = locate(store)
    if where.path is not None:
        db = Database(where, write=True, what="the benchmark's store")
        try:
            with db.lock:
                db.connection().execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            db.close()
        wal = where.path.with_name(where.path.name + "-wal")
        return where.path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
    db = Database(where, write=False, what="the benchmark's store")
    try:
        rows = db.read(
            "SELECT coalesce(sum(pg_total_relation_size(quote_ident(tablename))), 0) FROM pg_tables"
            " WHERE schemaname = current_schema()"
        )
    finally:
        db.close()
    return int(rows[0][0])


def folder_bytes(root: Path) -> tuple[int, int]:
    """(bytes of every file under ``root``, bytes the disk allocates for them and their folders)."""
    apparent = allocated = 0
    for folder, _, files in os.walk(root):
        allocated += os.stat(folder).st_blocks * 512
        for name in files:
            info = os.stat(os.path.join(folder, name))
            apparent += info.st_size
            allocated += info.st_blocks * 512
    return apparent, allocated
