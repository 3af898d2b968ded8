"""Policy versions, the active pointer, and the triggers that freeze a published version.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)

# Invariant 4 held by the database, not only by the service: a published row cannot be
# updated in any column or deleted, by this code or by anyone with a SQL prompt.
FREEZE_PUBLISHED = """
CREATE FUNCTION policy_versions_freeze_published() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status = 'published' THEN
        IF TG_OP = 'DELETE' THEN
            RAISE EXCEPTION 'policy version % is published and cannot be deleted', OLD.version
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        IF NEW IS DISTINCT FROM OLD THEN
            RAISE EXCEPTION 'policy version % is published and cannot be changed', OLD.version
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END
$$
"""
FREEZE_PUBLISHED_TRIGGER = """
CREATE TRIGGER policy_versions_freeze_published
    BEFORE UPDATE OR DELETE ON policy_versions
    FOR EACH ROW EXECUTE FUNCTION policy_versions_freeze_published();
"""

# Only a published version may be active, and the global version only moves forward (it is
# part of every cached snapshot's key; going back could revive a stale snapshot).
GUARD_STATE = """
CREATE FUNCTION policy_state_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.active_version IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM policy_versions
        WHERE version = NEW.active_version AND status = 'published'
    ) THEN
        RAISE EXCEPTION 'policy version % is not published and cannot be active',
            NEW.active_version
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.global_version < OLD.global_version THEN
        RAISE EXCEPTION 'the global policy version cannot go back (% to %)',
            OLD.global_version, NEW.global_version
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END
$$
"""
GUARD_STATE_TRIGGER = """
CREATE TRIGGER policy_state_guard
    BEFORE INSERT OR UPDATE ON policy_state
    FOR EACH ROW EXECUTE FUNCTION policy_state_guard();
"""


def upgrade() -> None:
    op.create_table(
        "policy_versions",
        sa.Column("version", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("digest", sa.Text, nullable=False),
        sa.Column("document", postgresql.JSONB, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("media_type", sa.Text, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("published_at", TZ, nullable=True),
        sa.Column("published_by", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("version", name="pk_policy_versions"),
        sa.UniqueConstraint("digest", name="uq_policy_versions_digest"),
        sa.CheckConstraint("status IN ('draft', 'published')", name="ck_policy_versions_status"),
    )
    op.create_table(
        "policy_state",
        sa.Column("id", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("active_version", sa.Integer, nullable=True),
        sa.Column("global_version", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("updated_at", TZ, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_policy_state"),
        sa.ForeignKeyConstraint(
            ["active_version"],
            ["policy_versions.version"],
            name="fk_policy_state_active_version_policy_versions",
        ),
        sa.CheckConstraint("id = 1", name="ck_policy_state_single_row"),
    )
    for statement in (FREEZE_PUBLISHED, FREEZE_PUBLISHED_TRIGGER, GUARD_STATE, GUARD_STATE_TRIGGER):
        op.execute(statement)
    op.execute("INSERT INTO policy_state (id, active_version, global_version) VALUES (1, NULL, 0)")


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS policy_state_guard ON policy_state")
    op.execute("DROP TRIGGER IF EXISTS policy_versions_freeze_published ON policy_versions")
    op.drop_table("policy_state")
    op.drop_table("policy_versions")
    op.execute("DROP FUNCTION IF EXISTS policy_state_guard()")
    op.execute("DROP FUNCTION IF EXISTS policy_versions_freeze_published()")
