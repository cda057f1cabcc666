"""Attacks on the audit trail, each on a database of its own (SQLite file or PostgreSQL schema):
the database refuses UPDATE/DELETE; an attacker who lifts that (owner rights) and deletes,
edits, reorders or re-chains rows without the key, or truncates the table, is caught by
``careloop audit verify`` with a located message; rows from before the keyed chain still verify.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from careloop.engine import audit, audit_guard
from careloop.engine import db as dbmod
from careloop.engine.cli import cli
from careloop.engine.clock import frozen_now
from careloop.engine.migrate import upgrade
from careloop.engine.models import AuditRow

from ..conftest import Tamper


def _new_engine(tmp_path: Path) -> tuple[Engine, str | None]:
    url = os.environ.get("CARELOOP_DATABASE_URL")
    if url and make_url(url).get_backend_name() == "postgresql":
        return dbmod.schema_engine(url, "careloop_audit")
    return dbmod.make_engine(f"sqlite:///{tmp_path / 'audit.db'}"), None


@pytest.fixture
def fresh(tmp_path: Path, db_engine: Engine, monkeypatch: pytest.MonkeyPatch
          ) -> Iterator[Engine]:
    """A database of its own, migrated, with its own checkpoint file; the CLI uses it."""
    engine, schema = _new_engine(tmp_path)
    monkeypatch.setenv("CARELOOP_AUDIT_CHECKPOINTS", str(tmp_path / "checkpoints.jsonl"))
    upgrade(engine)
    try:
        with dbmod.use_engine(engine):
            yield engine
    finally:
        engine.dispose()
        url = os.environ.get("CARELOOP_DATABASE_URL")
        if schema is not None and url:
            dbmod.drop_schema(url, schema)


def _append(engine: Engine, n: int, start: int = 0) -> list[int]:
    with dbmod.transaction(engine) as session:
        return [audit.append(session, actor="doc", action="patient.view", object_type="patient",
                             object_id=f"P{i}", patient_id=f"P{i}").id
                for i in range(start, start + n)]


def _verify() -> tuple[int, list[str]]:
    result = CliRunner().invoke(cli, ["audit", "verify"])
    return result.exit_code, result.output.splitlines()


def _checkpoint(engine: Engine, at: datetime) -> None:
    with frozen_now(at), dbmod.transaction(engine) as session:
        audit.checkpoint(session)


def test_the_database_refuses_update_and_delete(fresh: Engine) -> None:
    ids = _append(fresh, 3)
    for statement in (f"UPDATE audit_log SET patient_id = 'PZ' WHERE id = {ids[1]}",
                      f"DELETE FROM audit_log WHERE id >= {ids[1]}",
                      "UPDATE audit_anchor SET legacy_last_id = 99",
                      "DELETE FROM audit_anchor"):
        with pytest.raises(DBAPIError, match="append-only"), fresh.begin() as conn:
            conn.execute(text(statement))
    if fresh.dialect.name == "postgresql":
        with pytest.raises(DBAPIError, match="append-only"), fresh.begin() as conn:
            conn.execute(text("TRUNCATE audit_log"))
    with dbmod.transaction(fresh) as session:
        assert session.scalar(audit.row_count()) == 3
    assert _verify()[0] == 0


def test_deleting_the_last_rows_is_caught_by_the_checkpoint(fresh: Engine,
                                                            tamper: Tamper) -> None:
    _append(fresh, 30)
    _checkpoint(fresh, datetime(2026, 12, 6, 10, 0))  # hospital time
    ids = _append(fresh, 2, start=30)
    tamper(f"DELETE FROM audit_log WHERE id > {ids[-1] - 12}", engine=fresh)
    code, lines = _verify()
    assert code == 1
    assert "checkpoint at 2026-12-06 10:00 saw 30 rows; table ends at 20" in lines[0]
    assert lines[-1] == "1 break(s) in the audit trail"


def test_deleting_rows_before_the_checkpoint_and_re_linking_is_caught(
        fresh: Engine, tamper: Tamper) -> None:
    ids = _append(fresh, 6)
    _checkpoint(fresh, datetime(2026, 12, 6, 10, 0))
    # delete row 3 and mend the next row's link: without the key its hash no longer matches
    tamper(f"DELETE FROM audit_log WHERE id = {ids[2]}", engine=fresh)
    tamper(f"UPDATE audit_log SET prev_hash = (SELECT hash FROM audit_log WHERE id = {ids[1]}) "
           f"WHERE id = {ids[3]}", engine=fresh)
    code, lines = _verify()
    assert code == 1
    assert f"row {ids[3]}: hash mismatch: the row was changed" in lines
    assert any(line.startswith("checkpoint at 2026-12-06 10:00 saw 6 rows up to row") and
               "the table has 5 there (rows were deleted)" in line for line in lines)


def _rechain(engine: Engine, tamper: Tamper, first: int, hasher: str) -> None:
    """Recompute every hash from row ``first`` on with a public algorithm (no key)."""
    with dbmod.transaction(engine) as session:
        rows = session.scalars(select(AuditRow).order_by(AuditRow.id)).all()
        prev = audit.GENESIS
        updates = []
        for row in rows:
            if row.id >= first:
                fields = audit._fields(row)
                new = (audit._legacy_hash(prev, fields) if hasher == "sha256"
                       else audit._row_hash(b"a guessed key of 32 characters!!", prev, fields))
                updates.append((row.id, prev, new))
                row_hash = new
            else:
                row_hash = row.hash
            prev = row_hash
    for row_id, prev_hash, new in updates:
        tamper("UPDATE audit_log SET prev_hash = :p, hash = :h WHERE id = :id",
               {"p": prev_hash, "h": new, "id": row_id}, engine=engine)


@pytest.mark.parametrize("hasher", ["sha256", "guessed key"])
def test_an_edit_with_the_chain_recomputed_without_the_key_is_caught(
        fresh: Engine, tamper: Tamper, hasher: str) -> None:
    ids = _append(fresh, 5)
    tamper(f"UPDATE audit_log SET patient_id = 'P-someone-else' WHERE id = {ids[2]}",
           engine=fresh)
    _rechain(fresh, tamper, ids[2], hasher)
    code, lines = _verify()
    assert code == 1
    assert [line.split(":")[0] for line in lines[:-1]] == [f"row {i}" for i in ids[2:]]
    assert all("hash mismatch" in line for line in lines[:-1])
    if hasher == "sha256":
        assert "(its hash was computed without the audit key)" in lines[0]


def test_reordered_rows_are_caught(fresh: Engine, tamper: Tamper) -> None:
    ids = _append(fresh, 4)
    # swap what rows 2 and 3 say (with their hashes): the links no longer follow
    tamper(f"UPDATE audit_log SET id = -1 WHERE id = {ids[1]}", engine=fresh)
    tamper(f"UPDATE audit_log SET id = {ids[1]} WHERE id = {ids[2]}", engine=fresh)
    tamper(f"UPDATE audit_log SET id = {ids[2]} WHERE id = -1", engine=fresh)
    code, lines = _verify()
    assert code == 1
    assert lines[0].startswith(f"row {ids[1]}: previous hash does not match row {ids[0]}'s")


def test_re_chaining_after_a_checkpoint_is_caught(fresh: Engine, tamper: Tamper) -> None:
    """Delete a row and recompute the whole chain (with a guessed key): every row after it
    mismatches, and the checkpoint saw another hash and more rows."""
    ids = _append(fresh, 5)
    _checkpoint(fresh, datetime(2026, 12, 6, 10, 0))
    tamper(f"DELETE FROM audit_log WHERE id = {ids[1]}", engine=fresh)
    _rechain(fresh, tamper, ids[0], "guessed key")
    code, lines = _verify()
    assert code == 1
    assert f"row {ids[0]}: hash mismatch: the row was changed" in lines
    assert any("saw 5 rows up to row" in line and "has 4 there" in line for line in lines)
    assert any(line.startswith(f"row {ids[-1]}: hash differs from the one the checkpoint at "
                               "2026-12-06 10:00 saw") for line in lines)


def test_a_forged_checkpoint_line_is_caught(fresh: Engine) -> None:
    _append(fresh, 3)
    _checkpoint(fresh, datetime(2026, 12, 6, 10, 0))
    path = audit.checkpoint_path()
    assert path is not None
    entry = json.loads(path.read_text(encoding="utf-8"))
    entry["count"] = 2
    path.write_text(json.dumps(entry) + "\n", encoding="utf-8")
    code, lines = _verify()
    assert code == 1 and lines[0] == (f"{path}:1: checkpoint signature does not match (the "
                                      "line was altered or forged)")


def test_the_anchor_and_the_key_are_checked(fresh: Engine, tamper: Tamper,
                                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    _append(fresh, 2)
    other = tmp_path / "other.key"
    other.write_text("f" * 64, encoding="utf-8")
    monkeypatch.setenv("CARELOOP_AUDIT_KEY_FILE", str(other))
    code, lines = _verify()
    assert code == 1 and lines[0].startswith("the audit key is not the key this chain was "
                                             "started with")
    monkeypatch.undo()
    tamper("DELETE FROM audit_anchor", engine=fresh)
    code, lines = _verify()
    assert code == 1 and lines[0].startswith("the audit chain's anchor (audit_anchor) is "
                                             "missing")


def test_rows_from_before_the_keyed_chain_still_verify(tmp_path: Path, db_engine: Engine,
                                                       tamper: Tamper,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARELOOP_AUDIT_CHECKPOINTS", str(tmp_path / "checkpoints.jsonl"))
    engine, schema = _new_engine(tmp_path)
    try:
        upgrade(engine, "0012")  # the audit table as it was: unkeyed SHA-256 chain
        prev = audit.GENESIS
        with dbmod.transaction(engine) as session:
            for i in range(3):
                row = AuditRow(at=datetime(2026, 1, 1, 8, i).astimezone(), actor="old",
                               action="patient.view", patient_id=f"P{i}", outcome="success",
                               details={}, prev_hash=prev)
                row.hash = prev = audit._legacy_hash(prev, audit._fields(row))
                session.add(row)
                session.flush()
        upgrade(engine)
        with dbmod.use_engine(engine):
            ids = _append(engine, 2)
            code, lines = _verify()
            assert (code, lines) == (0, ["audit trail intact (5 rows)"])
            with dbmod.transaction(engine) as session:
                first = session.get(AuditRow, ids[0])
                assert first is not None and first.prev_hash == prev
                assert first.hash.startswith("hmac-sha256:")
            # an attacker labels a keyed row as legacy and recomputes it with SHA-256
            _rechain(engine, tamper, ids[0], "sha256")
            code, lines = _verify()
            assert code == 1 and lines[0] == (f"row {ids[0]}: hash mismatch: the row was "
                                              "changed (its hash was computed without the "
                                              "audit key)")
            tamper("UPDATE audit_log SET actor = 'older' WHERE id = 1", engine=engine)
            assert _verify()[1][0] == "row 1: hash mismatch: the row was changed"
    finally:
        engine.dispose()
        url = os.environ.get("CARELOOP_DATABASE_URL")
        if schema is not None and url:
            dbmod.drop_schema(url, schema)


def test_the_tick_writes_checkpoints_at_its_interval(fresh: Engine) -> None:
    from careloop.engine.registry import loaded_registry

    tick = loaded_registry().catalogue("tick").get("audit.checkpoint")
    assert tick is not None
    _append(fresh, 2)
    path = audit.checkpoint_path()
    assert path is not None
    with frozen_now(datetime(2026, 12, 6, 10, 0)):
        tick(fresh)
        tick(fresh)
    _append(fresh, 1)
    with frozen_now(datetime(2026, 12, 6, 10, 30)):
        tick(fresh)  # within the hour: nothing
    with frozen_now(datetime(2026, 12, 6, 11, 5)):
        tick(fresh)
        _append(fresh, 1)
    entries = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [(e["count"], e["at"]) for e in entries] == [
        (2, "2026-12-06T02:00:00+00:00"), (3, "2026-12-06T03:05:00+00:00")]
    assert _verify()[0] == 0
    result = CliRunner().invoke(cli, ["audit", "checkpoint"])
    assert result.exit_code == 0 and ": 4 rows, last row" in result.output


def test_upgrade_creates_the_key_file_private(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CARELOOP_AUDIT_KEY_FILE")
    monkeypatch.delenv("CARELOOP_AUDIT_KEY", raising=False)
    monkeypatch.setenv("CARELOOP_HOME", str(tmp_path))
    monkeypatch.setenv("CARELOOP_DATABASE_URL", f"sqlite:///{tmp_path / 'new.db'}")
    result = CliRunner().invoke(cli, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    key = tmp_path / "var" / "audit.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and len(key.read_text().strip()) == 64


def test_an_application_role_may_append_but_never_change(fresh: Engine) -> None:
    """PostgreSQL: ``careloop db app-role`` leaves the role SELECT and INSERT on the audit
    tables only (SQLite has no roles: the command says so)."""
    _append(fresh, 1)
    if fresh.dialect.name != "postgresql":
        result = CliRunner().invoke(cli, ["db", "app-role", "careloop_app"])
        assert result.exit_code == 1 and "PostgreSQL" in result.output
        return
    role = f"careloop_app_{os.getpid()}"
    with fresh.begin() as conn:
        conn.execute(text(f"DROP ROLE IF EXISTS {role}"))
        conn.execute(text(f"CREATE ROLE {role}"))
    try:
        result = CliRunner().invoke(cli, ["db", "app-role", role])
        assert result.exit_code == 0, result.output
        with fresh.connect() as conn:
            conn.execute(text(f"SET ROLE {role}"))
            with Session(bind=conn) as session:  # the role reads and appends
                audit.append(session, actor="app", action="auth.login")
                session.commit()
            conn.commit()
            conn.execute(text(f"SET ROLE {role}"))
            assert conn.execute(text("SELECT count(*) FROM audit_log")).scalar_one() == 2
            conn.execute(text("SAVEPOINT s"))
            for statement in ("DELETE FROM audit_log", "UPDATE audit_log SET actor = 'x'",
                              "TRUNCATE audit_log", "DROP TRIGGER audit_log_append_only "
                              "ON audit_log"):
                with pytest.raises(DBAPIError, match=r"permission denied|must be owner"):
                    conn.execute(text(statement))
                conn.execute(text("ROLLBACK TO SAVEPOINT s"))
            conn.rollback()
            conn.execute(text("RESET ROLE"))
            conn.commit()
    finally:
        with fresh.begin() as conn:
            conn.execute(text("RESET ROLE"))
            conn.execute(text(f"DROP OWNED BY {role}"))
            conn.execute(text(f"DROP ROLE {role}"))
    assert audit_guard.TABLES == ("audit_log", "audit_anchor")
