"""Per-node storage commitment requests, the cluster's rule sets, and what each node reports (docs/cluster.md).

- ``committransaction.node_id``: the node whose forward workers requested it, so that a node's start-up abandons
  only its own unaccepted requests (and a silent node's, once its lease has expired); empty for the rows that
  exist (made by a single router: treated as any node's).
- ``ruleset``: the versions of the cluster's rule files (``router.rules.shared``), the newest in force.
- ``node.rules`` (the digest of the rules the node routes by) and ``node.dropped`` (outcomes it dropped since its
  start because another node had taken the job over).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ruleset",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("files", sa.Text(), nullable=False),
        sa.Column("node_id", sa.String(length=64), nullable=False),
        sa.Column("saved_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("committransaction", schema=None) as batch_op:
        batch_op.add_column(sa.Column("node_id", sa.String(length=64), nullable=False, server_default=""))
    with op.batch_alter_table("node", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rules", sa.String(length=64), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("dropped", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("node", schema=None) as batch_op:
        batch_op.drop_column("dropped")
        batch_op.drop_column("rules")
    with op.batch_alter_table("committransaction", schema=None) as batch_op:
        batch_op.drop_column("node_id")
    op.drop_table("ruleset")
