"""audit rows outlive what they audit

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 10:50:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Audit rows keep provider and user ids as plain values: no cascade deletes them.
    op.drop_constraint("fk_audit_logs_provider_id_providers", "audit_logs", type_="foreignkey")
    op.drop_constraint("fk_audit_logs_user_id_users", "audit_logs", type_="foreignkey")
    op.alter_column("audit_logs", "provider_id", existing_type=sa.Uuid(), nullable=True)
    op.alter_column("audit_logs", "user_id", existing_type=sa.Uuid(), nullable=True)
    op.create_index(op.f("ix_audit_logs_user_id"), "audit_logs", ["user_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_audit_logs_user_id"), table_name="audit_logs")
    op.execute("DELETE FROM audit_logs WHERE provider_id IS NULL OR user_id IS NULL")
    op.execute(
        "DELETE FROM audit_logs a WHERE NOT EXISTS (SELECT 1 FROM providers p"
        " WHERE p.id = a.provider_id) OR NOT EXISTS (SELECT 1 FROM users u WHERE u.id = a.user_id)"
    )
    op.alter_column("audit_logs", "user_id", existing_type=sa.Uuid(), nullable=False)
    op.alter_column("audit_logs", "provider_id", existing_type=sa.Uuid(), nullable=False)
    op.create_foreign_key(
        "fk_audit_logs_user_id_users",
        "audit_logs",
        "users",
        ["user_id"],
        ["id"],
        ondelete="CASCADE",
    )
    op.create_foreign_key(
        "fk_audit_logs_provider_id_providers",
        "audit_logs",
        "providers",
        ["provider_id"],
        ["id"],
        ondelete="CASCADE",
    )
