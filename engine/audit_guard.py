"""Append-only enforced by the database: triggers refusing UPDATE and DELETE (and TRUNCATE on
PostgreSQL) on the audit tables, and the grants of an application role that may only read and
append them.

Migration 0014 installs the triggers. The application has no switch to lift them; whoever may
drop a trigger (the tables' owner) could, which is why on PostgreSQL the application should
connect as a role that does not own the tables (``careloop db app-role``, docs/security.md).
"""

from __future__ import annotations

import re

from sqlalchemy import Connection, text

TABLES = ("audit_log", "audit_anchor")
_ROLE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _sqlite_install(table: str) -> list[str]:
    return [f"CREATE TRIGGER {table}_no_{op.lower()} BEFORE {op} ON {table} BEGIN "
            f"SELECT RAISE(ABORT, '{table} is append-only: {op} refused'); END"
            for op in ("UPDATE", "DELETE")]


_PG_FUNCTION = """
CREATE OR REPLACE FUNCTION careloop_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$"""


def _pg_install(table: str) -> list[str]:
    return [f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION careloop_append_only()",
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION careloop_append_only()"]


def install(connection: Connection) -> None:
    """Create the triggers (migration 0014)."""
    if connection.dialect.name == "postgresql":
        connection.execute(text(_PG_FUNCTION))
        for table in TABLES:
            for statement in _pg_install(table):
                connection.execute(text(statement))
        return
    for table in TABLES:
        for statement in _sqlite_install(table):
            connection.execute(text(statement))


def remove(connection: Connection) -> None:
    """Drop the triggers (migration 0014's downgrade)."""
    postgres = connection.dialect.name == "postgresql"
    for table in TABLES:
        names = ([f"{table}_append_only", f"{table}_no_truncate"] if postgres
                 else [f"{table}_no_update", f"{table}_no_delete"])
        for name in names:
            connection.execute(text(f"DROP TRIGGER IF EXISTS {name}"
                                    + (f" ON {table}" if postgres else "")))
    if postgres:
        connection.execute(text("DROP FUNCTION IF EXISTS careloop_append_only()"))


def grant_app_role(connection: Connection, role: str) -> list[str]:
    """PostgreSQL: let ``role`` (which must exist and must not own the tables) use every table of
    the current schema, but only SELECT and INSERT the audit tables. Returns the statements."""
    if connection.dialect.name != "postgresql":
        raise ValueError("an application role is a PostgreSQL setting")
    if not _ROLE.match(role):
        raise ValueError(f"not a plain role name: {role!r} (lower-case letters, digits, _)")
    exists = connection.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"),
                                {"r": role}).first()
    if exists is None:
        raise ValueError(f"role {role} does not exist (CREATE ROLE {role} LOGIN PASSWORD …)")
    owner = connection.execute(text(
        "SELECT tableowner FROM pg_tables WHERE tablename = 'audit_log' "
        "AND schemaname = current_schema()")).scalar()
    if owner == role:
        raise ValueError(f"role {role} owns the audit tables: an owner may drop the triggers; "
                         "migrate as another role and connect the application as this one")
    schema = str(connection.execute(text("SELECT current_schema()")).scalar_one())
    audit = ", ".join(TABLES)
    statements = [
        f'GRANT USAGE ON SCHEMA "{schema}" TO {role}',
        f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "{schema}" TO {role}',
        f'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA "{schema}" TO {role}',
        f"REVOKE UPDATE, DELETE, TRUNCATE ON {audit} FROM {role}",
        f'REVOKE INSERT, UPDATE, DELETE ON "{schema}".alembic_version FROM {role}',
    ]
    for statement in statements:
        connection.execute(text(statement))
    return statements
