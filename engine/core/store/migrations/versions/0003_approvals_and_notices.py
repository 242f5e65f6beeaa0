"""The team: approval attempts with their authenticated author, quorum requirements, and the notices outbox.

* ``alert_queue.requirement`` (JSON: the approval rule fixed when the entry escalated — who may
  approve, how many, who asked), ``requested_by`` (JSON identity of the human who asked for the
  run, ``cairn request``; empty for an alert), ``expires_at`` (when an escalated entry's request
  lapses).
* ``approval_attempts``: every approve or decline attempt on an entry — by whom (identity as
  JSON, and ``who_key``, the person counted once in a quorum), through which front end, what it
  came to (counted, approved, declined, refused) and why.
* ``notices``: the durable outbox, one row per thing worth telling (an entry escalated, an
  approval counted, remediated …), written in the same transaction as the change it tells of;
  ``key`` is its idempotency key.
* ``deliveries``: one row per notice and sink (a webhook, Slack), retried with backoff until
  delivered, or abandoned after its last attempt; ``holder``/``claimed_until`` let several servers
  share the sending without sending twice while a claim holds.
* ``slack_messages``: the Slack message each entry has (its channel and ``ts``), so its thread and
  its updates find it.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("alert_queue", sa.Column("requirement", sa.Text()))
    op.add_column("alert_queue", sa.Column("requested_by", sa.Text()))
    op.add_column("alert_queue", sa.Column("expires_at", sa.Float(precision=53)))
    op.create_index(
        "alert_queue_expiring",
        "alert_queue",
        ["expires_at"],
        sqlite_where=sa.text("state = 'escalated'"),
        postgresql_where=sa.text("state = 'escalated'"),
    )
    op.create_table(
        "approval_attempts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("entry_id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Text()),
        sa.Column("at", sa.Float(precision=53), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("who_key", sa.Text(), nullable=False),
        sa.Column("who", sa.Text(), nullable=False),
        sa.Column("identity", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False, server_default=""),
        sa.Column("message", sa.Text(), nullable=False, server_default=""),
    )
    op.create_index("approval_attempts_entry", "approval_attempts", ["entry_id", "id"])
    op.create_table(
        "notices",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("key", sa.Text(), nullable=False, unique=True),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("entry_id", sa.Integer()),
        sa.Column("run_id", sa.Text()),
        sa.Column("created_at", sa.Float(precision=53), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("expanded", sa.Integer(), nullable=False, server_default="0"),
    )
    op.create_index(
        "notices_unexpanded",
        "notices",
        ["id"],
        sqlite_where=sa.text("expanded = 0"),
        postgresql_where=sa.text("expanded = 0"),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("notice_id", sa.Integer(), sa.ForeignKey("notices.id"), nullable=False),
        sa.Column("entry_id", sa.Integer()),
        sa.Column("sink", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_at", sa.Float(precision=53), nullable=False),
        sa.Column("holder", sa.Text()),
        sa.Column("claimed_until", sa.Float(precision=53)),
        sa.Column("delivered_at", sa.Float(precision=53)),
        sa.Column("last_error", sa.Text(), nullable=False, server_default=""),
        sa.UniqueConstraint("notice_id", "sink", name="deliveries_once"),
    )
    op.create_index(
        "deliveries_due",
        "deliveries",
        ["next_at"],
        sqlite_where=sa.text("state = 'pending'"),
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.create_index("deliveries_entry", "deliveries", ["sink", "entry_id", "notice_id"])
    op.create_table(
        "slack_messages",
        sa.Column("entry_id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("channel", sa.Text(), nullable=False),
        sa.Column("ts", sa.Text(), nullable=False),
        sa.Column("posted_at", sa.Float(precision=53), nullable=False),
    )


def downgrade() -> None:
    raise NotImplementedError("Cairn's store is upgraded only: restore a backup to go back")
