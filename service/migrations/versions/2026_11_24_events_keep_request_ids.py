"""events keep their request's id without a foreign key; outbox messages are not indexed by cycle

The purge of raw requests used to rewrite the events they delivered (``ON DELETE SET NULL``),
and storing an event cost a lookup of its request and an index entry; nothing reads events by
request, nor notifications by cycle.

Revision ID: 5e0c1d2a7b41
Revises: bac761cc65d5
Create Date: 2026-11-24 03:20:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "5e0c1d2a7b41"
down_revision: str | None = "bac761cc65d5"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("lead_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_lead_events_raw_request_id"))
        batch_op.drop_constraint(
            batch_op.f("fk_lead_events_raw_request_id_raw_requests"), type_="foreignkey"
        )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbox_cycle_id"))


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_outbox_cycle_id"), ["cycle_id"], unique=False)
    # Requests purged meanwhile are referred to no more, as the foreign key requires.
    op.execute(
        "UPDATE lead_events SET raw_request_id = NULL WHERE raw_request_id IS NOT NULL "
        "AND NOT EXISTS (SELECT 1 FROM raw_requests AS r WHERE r.id = lead_events.raw_request_id)"
    )
    with op.batch_alter_table("lead_events", schema=None) as batch_op:
        batch_op.create_foreign_key(
            batch_op.f("fk_lead_events_raw_request_id_raw_requests"),
            "raw_requests",
            ["raw_request_id"],
            ["id"],
            ondelete="SET NULL",
        )
        batch_op.create_index(
            batch_op.f("ix_lead_events_raw_request_id"), ["raw_request_id"], unique=False
        )
