"""cycles are no longer indexed by owner

Every cycle insert, and every update that moves a timer (the sweep's, ingest's), wrote an entry
into each index of ``sla_cycles``; the owner index cost a burst of 100,000 due timers about 5 %
of its drain time. It served little: a rep's work queue (``GET /api/v1/slas?owner=``) is read
in deadline order, which walks ``(due_at, id)`` and stops at the first page; the owner index
only helped an owner with almost no cycles (over a million cycles, an unknown owner's empty
page takes ~50 ms instead of ~4 ms). Reports group by owner within a period, by deadline.

Revision ID: c3a1f6e2b8d5
Revises: 9b3e6f1c2d47
Create Date: 2026-11-24 06:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "c3a1f6e2b8d5"
down_revision: str | None = "9b3e6f1c2d47"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sla_cycles", schema=None) as batch_op:
        batch_op.drop_index("ix_sla_cycles_owner")


def downgrade() -> None:
    with op.batch_alter_table("sla_cycles", schema=None) as batch_op:
        batch_op.create_index("ix_sla_cycles_owner", ["owner"], unique=False)
