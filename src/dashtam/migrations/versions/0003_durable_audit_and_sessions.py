"""audit rows outlive what they audit; login sessions

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

    op.create_table(
        "auth_sessions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ip_address", sa.String(length=64), nullable=True),
        sa.Column("user_agent", sa.String(length=500), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_auth_sessions_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_sessions")),
    )
    op.create_index(op.f("ix_auth_sessions_user_id"), "auth_sessions", ["user_id"], unique=False)
    # Every existing refresh-token family becomes a session; revoked if all its tokens are.
    op.execute(
        """
        INSERT INTO auth_sessions (id, user_id, created_at, last_used_at, revoked_at)
        SELECT family_id, (array_agg(user_id))[1], min(created_at), max(created_at),
               CASE WHEN bool_and(revoked_at IS NOT NULL) THEN max(revoked_at) END
        FROM auth_refresh_tokens GROUP BY family_id
        """
    )
    op.create_foreign_key(
        op.f("fk_auth_refresh_tokens_family_id_auth_sessions"),
        "auth_refresh_tokens",
        "auth_sessions",
        ["family_id"],
        ["id"],
        ondelete="CASCADE",
    )


def downgrade() -> None:
    op.drop_constraint(
        op.f("fk_auth_refresh_tokens_family_id_auth_sessions"),
        "auth_refresh_tokens",
        type_="foreignkey",
    )
    op.drop_index(op.f("ix_auth_sessions_user_id"), table_name="auth_sessions")
    op.drop_table("auth_sessions")
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
