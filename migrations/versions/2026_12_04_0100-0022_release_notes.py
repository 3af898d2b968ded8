"""Release notes of every publish and rollback, and sign-offs of policy versions
(docs/release-notes.md).

Revision ID: 0022
Revises: 0020
Create Date: 2026-12-04

`release_notes`: one row per move of the active pointer, appended in the move's
transaction, never changed. `policy_approvals`: one row per approval of a version by an
admin key; a publish that needs one marks it used.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0020"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "policy_approvals",
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("approved_by", sa.Text, nullable=False),
        sa.Column("comment", sa.Text, nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("used_at", TZ, nullable=True),
        sa.Column("used_by", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_policy_approvals"),
        sa.ForeignKeyConstraint(
            ["version"],
            ["policy_versions.version"],
            name="fk_policy_approvals_version_policy_versions",
            ondelete="RESTRICT",
        ),
    )
    op.create_index("ix_policy_approvals_version", "policy_approvals", ["version"])
    op.create_table(
        "release_notes",
        sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("previous_version", sa.Integer, nullable=True),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("body", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_release_notes"),
        sa.ForeignKeyConstraint(
            ["version"],
            ["policy_versions.version"],
            name="fk_release_notes_version_policy_versions",
            ondelete="RESTRICT",
        ),
        sa.CheckConstraint("action IN ('publish', 'rollback')", name="ck_release_notes_action"),
    )
    op.create_index("ix_release_notes_version_id", "release_notes", ["version", "id"])


def downgrade() -> None:
    op.drop_table("release_notes")
    op.drop_table("policy_approvals")
