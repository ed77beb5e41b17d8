"""cycles are indexed by deadline and id, the work queue's order, instead of policy, state and deadline

The work queue (``GET /api/v1/slas``) sorted every matching cycle to return its first page: over
a second with a million cycles. Walked in ``(due_at, id)`` order it reads one page's worth of
rows, and its cursor is a range of the index. Reports select a period by deadline, which the new
index serves with or without a policy. The number of indexes a cycle update writes stays the
same.

Revision ID: 9b3e6f1c2d47
Revises: 5e0c1d2a7b41
Create Date: 2026-11-24 05:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "9b3e6f1c2d47"
down_revision: str | None = "5e0c1d2a7b41"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sla_cycles", schema=None) as batch_op:
        batch_op.drop_index("ix_sla_cycles_policy_id_state_due_at")
        batch_op.create_index("ix_sla_cycles_due_at_id", ["due_at", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("sla_cycles", schema=None) as batch_op:
        batch_op.drop_index("ix_sla_cycles_due_at_id")
        batch_op.create_index(
            "ix_sla_cycles_policy_id_state_due_at", ["policy_id", "state", "due_at"], unique=False
        )
