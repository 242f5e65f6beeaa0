"""The store as the first release wrote it: runs, steps, approvals, the alert queue, the remediation ledger.

A SQLite journal that release wrote (no ``alembic_version``; ``PRAGMA user_version`` 0, 1 or 2)
is taken over as it is: missing tables are created, a queue from before approvals gets its
``approved_by`` column, and version-1 step statuses (told apart by their message's first words)
get the statuses version 2 records. A new store (SQLite or PostgreSQL) gets every table.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

STATES_FROM_WORDS = (
    ("interrupted", "error", "interrupted:"),
    ("cancelled", "error", "cancelled"),
    ("not_run", "error", "not run:"),
    ("not_run", "skipped", "not run:"),
    ("not_run", "not_asked", "not run:"),
)
"""(status now, status in journal version 1, how its message starts). The same table as
``engine.core.journal_read.STATES_FROM_WORDS``, copied on purpose: a migration is history and must
not change when the code it once matched does."""


def upgrade() -> None:
    bind = op.get_bind()
    existing = set(sa.inspect(bind).get_table_names())
    sqlite = bind.dialect.name == "sqlite"
    if "runs" not in existing:
        _runs()
    if "steps" not in existing:
        _steps()
    if "approvals" not in existing:
        _approvals()
    if "alert_queue" not in existing:
        _alert_queue()
    elif "approved_by" not in {c["name"] for c in sa.inspect(bind).get_columns("alert_queue")}:
        op.add_column("alert_queue", sa.Column("approved_by", sa.Text()))
    if "remediations" not in existing:
        _remediations()
    if sqlite and "steps" in existing:
        version = bind.exec_driver_sql("PRAGMA user_version").scalar() or 0
        if version < 2:
            for new, old, words in STATES_FROM_WORDS:
                bind.execute(
                    sa.text("UPDATE steps SET status = :new WHERE status = :old AND message LIKE :words"),
                    {"new": new, "old": old, "words": words + "%"},
                )
    if sqlite:
        bind.exec_driver_sql("PRAGMA user_version=2")  # what the first release reads, should it open the file


def _runs() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.Text(), primary_key=True),
        sa.Column("runbook_id", sa.Text(), nullable=False),
        sa.Column("runbook_path", sa.Text(), nullable=False),
        sa.Column("runbook_sha256", sa.Text(), nullable=False),
        sa.Column("runbook_text", sa.Text(), nullable=False),
        sa.Column("hosts", sa.Text(), nullable=False),
        sa.Column("inputs", sa.Text(), nullable=False),
        sa.Column("started_by", sa.Text(), nullable=False),
        sa.Column("trigger", sa.Text(), nullable=False),
        sa.Column("dry_run", sa.Integer(), nullable=False),
        sa.Column("last_phase", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("exit_code", sa.Integer()),
        sa.Column("outcomes", sa.Text(), nullable=False, server_default="{}"),
        sa.Column("started_at", sa.Float(precision=53), nullable=False),
        sa.Column("finished_at", sa.Float(precision=53)),
        sa.Column("artifacts", sa.Text(), nullable=False),
    )
    op.create_index("runs_started", "runs", ["started_at"])


def _steps() -> None:
    op.create_table(
        "steps",
        sa.Column("run_id", sa.Text(), sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("host", sa.Text(), nullable=False),
        sa.Column("phase", sa.Text(), nullable=False),
        sa.Column("step_id", sa.Text(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False, server_default=""),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False, server_default=""),
        sa.Column("command", sa.Text(), nullable=False, server_default=""),
        sa.Column("rc", sa.Integer()),
        sa.Column("stdout", sa.Text(), nullable=False, server_default=""),
        sa.Column("stderr", sa.Text(), nullable=False, server_default=""),
        sa.Column("out", sa.Text()),
        sa.Column("started_at", sa.Float(precision=53)),
        sa.Column("duration", sa.Float(precision=53)),
        sa.Column("approval", sa.Text(), nullable=False, server_default=""),
        sa.PrimaryKeyConstraint("run_id", "host", "phase", "step_id"),
    )


def _approvals() -> None:
    op.create_table(
        "approvals",
        sa.Column("run_id", sa.Text(), sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("host", sa.Text(), nullable=False),
        sa.Column("phase", sa.Text(), nullable=False),
        sa.Column("step_id", sa.Text(), nullable=False),
        sa.Column("command", sa.Text(), nullable=False),
        sa.Column("approved", sa.Integer(), nullable=False),
        sa.Column("decided_by", sa.Text(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("at", sa.Float(precision=53), nullable=False),
    )


def _alert_queue() -> None:
    op.create_table(
        "alert_queue",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("received_at", sa.Float(precision=53), nullable=False),
        sa.Column("fingerprint", sa.Text(), nullable=False),
        sa.Column("runbook_id", sa.Text(), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("alert", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("run_id", sa.Text()),
        sa.Column("note", sa.Text(), nullable=False, server_default=""),
        sa.Column("updated_at", sa.Float(precision=53), nullable=False),
        sa.Column("approved_by", sa.Text()),
        sqlite_autoincrement=True,
    )
    op.create_index("alert_queue_state", "alert_queue", ["state", "id"])
    op.create_index("alert_queue_key", "alert_queue", ["runbook_id", "target", "state"])
    op.create_index("alert_queue_fingerprint", "alert_queue", ["fingerprint", "state"])
    op.create_index("alert_queue_run", "alert_queue", ["run_id"])


def _remediations() -> None:
    op.create_table(
        "remediations",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("host", sa.Text(), nullable=False),
        sa.Column("runbook_id", sa.Text(), nullable=False),
        sa.Column("run_id", sa.Text(), nullable=False),
        sa.Column("automatic", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.Float(precision=53), nullable=False),
        sa.Column("ended_at", sa.Float(precision=53)),
        sqlite_autoincrement=True,
    )
    op.create_index("remediations_host", "remediations", ["host", "started_at"])
    op.create_index("remediations_open", "remediations", ["ended_at"])


def downgrade() -> None:
    raise NotImplementedError("Cairn's store is upgraded only: restore a backup to go back")
