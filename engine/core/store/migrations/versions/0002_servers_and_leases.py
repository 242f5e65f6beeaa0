"""Several servers on one store: holders and their leases, each active alert queued once, per-host outcomes.

* ``holders``: each process that holds work (a ``cairn serve``, a ``cairn run`` on PostgreSQL),
  its machine and process, and its lease (``lease_until``, by the database's clock), renewed by
  heartbeat; ``state`` live, released (stopped and handed its work over) or lapsed (another
  server found its lease run out and took its work).
* ``alert_queue.holder``, ``runs.holder``, ``remediations.holder``: who holds an entry, a run, a
  ledger row.
* A partial unique index on the alert queue's active entries per (runbook, target): two servers
  given the same alert at once queue it once (the database refuses the second). Duplicates an
  older journal may hold are cancelled first, the oldest kept.
* ``runs.trigger_kind`` (filled from the trigger), ``host_outcomes`` (one row per host, where the
  first release kept one JSON document per run), ``store_probe`` (a writer's "can I write?").

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ACTIVE = ("queued", "running", "escalated")


def upgrade() -> None:
    bind = op.get_bind()
    op.create_table(
        "holders",
        sa.Column("id", sa.Text(), primary_key=True),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("machine", sa.Text(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("pid_start", sa.Text(), nullable=False, server_default=""),
        sa.Column("started_at", sa.Float(precision=53), nullable=False),
        sa.Column("renewed_at", sa.Float(precision=53), nullable=False),
        sa.Column("lease_until", sa.Float(precision=53), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False, server_default=""),
    )
    op.create_index("holders_state", "holders", ["state", "lease_until"])
    op.add_column("alert_queue", sa.Column("holder", sa.Text()))
    op.add_column("runs", sa.Column("holder", sa.Text()))
    op.add_column("remediations", sa.Column("holder", sa.Text()))
    op.add_column("runs", sa.Column("trigger_kind", sa.Text(), nullable=False, server_default=""))
    if bind.dialect.name == "sqlite":
        op.execute("UPDATE runs SET trigger_kind = coalesce(json_extract(trigger, '$.kind'), '')")
    else:
        op.execute("UPDATE runs SET trigger_kind = coalesce(trigger::json ->> 'kind', '')")
    op.create_index("runs_kind", "runs", ["trigger_kind", "started_at"])
    op.create_index("runs_holder", "runs", ["holder"], postgresql_where=sa.text("status = 'running'"))
    op.create_index("approvals_run", "approvals", ["run_id", "seq"])
    op.create_index("alert_queue_holder", "alert_queue", ["holder"])
    op.create_index("alert_queue_updated", "alert_queue", ["updated_at"])
    op.create_index("remediations_run", "remediations", ["run_id"])
    _cancel_duplicates(bind)
    op.create_index(
        "alert_queue_one_active",
        "alert_queue",
        ["runbook_id", "target"],
        unique=True,
        sqlite_where=sa.text("state IN ('queued', 'running', 'escalated')"),
        postgresql_where=sa.text("state IN ('queued', 'running', 'escalated')"),
    )
    op.create_table(
        "host_outcomes",
        sa.Column("run_id", sa.Text(), sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("host", sa.Text(), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False, server_default=""),
        sa.PrimaryKeyConstraint("run_id", "host"),
    )
    op.create_table(
        "store_probe",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("holder", sa.Text(), nullable=False, server_default=""),
        sa.Column("at", sa.Float(precision=53), nullable=False),
    )


def _cancel_duplicates(bind: sa.engine.Connection) -> None:
    """Entries active twice for one (runbook, target): the oldest stays, the others are cancelled, saying so."""
    rows = bind.execute(
        sa.text(
            "SELECT id, runbook_id, target FROM alert_queue WHERE state IN ('queued', 'running', 'escalated')"
            " ORDER BY runbook_id, target, id"
        )
    ).fetchall()
    kept: dict[tuple[str, str], int] = {}
    for entry_id, runbook_id, target in rows:
        first = kept.setdefault((runbook_id, target), entry_id)
        if first != entry_id:
            bind.execute(
                sa.text("UPDATE alert_queue SET state = 'cancelled', note = :note WHERE id = :id"),
                {"id": entry_id, "note": f"cancelled by journal migrate: a duplicate of entry {first}"},
            )


def downgrade() -> None:
    raise NotImplementedError("Cairn's store is upgraded only: restore a backup to go back")
